// `igw demo`: a sample GraphQL backend, the control plane (SQLite in a temp directory) and the
// gateway in sidecar mode taking its config from that control plane, all in one process tree,
// no Redis or Docker. Prints copy-paste examples, including admin tokens for the control plane.
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { splitListenAddress } from '../config/primitives.ts'
import { validateConfig } from '../config/load.ts'
import type { Flags } from './cli.ts'
import { configFromDocument, installSignals } from './cli.ts'
import { startDemoBackend } from './demo-backend.ts'
import { startProxy } from './supervisor.ts'

/** The demo's config document as the control plane stores it (addresses come from flags). */
export function demoDocument(backendUrl: string): Record<string, unknown> {
  return {
    mode: 'sidecar',
    upstreams: { backend: { url: backendUrl, healthCheck: { path: '/healthz' } } },
    tenants: {
      demo: { tier: 'gold', displayName: 'Demo tenant' },
      acme: { tier: 'silver', timezone: 'America/New_York' },
    },
    routes: [
      {
        name: 'export',
        match: { pathPrefix: '/export/' },
        upstream: 'backend',
        type: 'http',
        timeouts: { totalMs: 0 },
        filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'demo' }],
      },
      {
        name: 'graphql',
        match: { pathPrefix: '/' },
        upstream: 'backend',
        type: 'graphql',
        filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'demo' }],
      },
    ],
  }
}

export function demoConfig(backendUrl: string, listen: string, adminListen: string, workers: number | 'auto') {
  return validateConfig({ ...demoDocument(backendUrl), listen, admin: { listen: adminListen }, workers }, 'demo config')
}

export async function runDemo(flags: Flags): Promise<void> {
  const backendAddr = splitListenAddress(process.env.IGW_DEMO_BACKEND ?? '127.0.0.1:4000')
  let backend
  try {
    backend = await startDemoBackend({ host: backendAddr.host ?? '127.0.0.1', port: backendAddr.port })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    console.error(
      e.code === 'EADDRINUSE'
        ? `igw demo: port ${backendAddr.port} is taken; run the sample backend elsewhere with IGW_DEMO_BACKEND=127.0.0.1:4001`
        : `igw demo: cannot start the sample backend: ${e.message}`,
    )
    process.exit(1)
  }
  const listen = flags.listen ?? ':8080'
  const adminListen = flags['admin-listen'] ?? ':9901'

  // The control plane: SQLite and its signing key in a fresh temp directory, an HS256 secret
  // made up for this run, and two tokens minted with it (an admin, and the proxy's).
  const { startControlPlane } = await import('../control-plane/server.ts')
  const { loadOrCreateSigningKey } = await import('../control-plane/signing.ts')
  const { mintToken } = await import('../control-plane/auth.ts')
  const { startProxyFromControlPlane } = await import('./control-plane-client.ts')
  const dir = mkdtempSync(join(tmpdir(), 'igw-demo-'))
  const secret = randomBytes(32).toString('base64url')
  const cpAddr = splitListenAddress(process.env.IGW_DEMO_CONTROL_PLANE ?? '127.0.0.1:7070')
  const cpLogger = pino({ level: 'warn', base: { component: 'control-plane' } })
  const cpOptions = { db: `sqlite:${join(dir, 'igw.db')}`, host: cpAddr.host ?? '127.0.0.1', auth: { secret }, signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')), seed: demoDocument(backend.url), logger: cpLogger }
  let cp
  try {
    cp = await startControlPlane({ ...cpOptions, port: cpAddr.port })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
    cp = await startControlPlane({ ...cpOptions, port: 0 }) // :7070 is taken: any free port will do for a demo
  }
  const adminToken = await mintToken(secret, { sub: 'demo-admin', roles: ['admin'] })
  const viewerToken = await mintToken(secret, { sub: 'demo-viewer', roles: ['viewer'], tenant: 'demo' })
  const proxyToken = await mintToken(secret, { sub: 'demo-proxy', roles: ['proxy'] })

  const clientLog = pino({ level: 'warn', base: { component: 'control-plane-client' } })
  const proxyFlags: Flags = { ...flags, listen, 'admin-listen': adminListen }
  let proxy: Awaited<ReturnType<typeof startProxy>> | undefined
  const { client } = await startProxyFromControlPlane(
    {
      url: cp.url,
      token: proxyToken,
      stateDir: join(dir, 'proxy-state'),
      publicKeyPem: cpOptions.signingKey.publicKeyPem,
      proxyId: 'demo-proxy',
      toConfig: (doc, source) => configFromDocument(doc, proxyFlags, source),
      usageIntervalMs: 2_000,
      log: (level, obj, msg) => clientLog[level](obj, msg),
    },
    undefined,
    async (config, version) => (proxy = await startProxy({ config, version })),
  )
  const gw = `http://127.0.0.1:${proxy!.port}`
  const adm = `http://127.0.0.1:${proxy!.adminPort}`
  const cpu = cp.url
  process.stderr.write(`
IntelGraph Gateway demo
  backend (graphql-yoga)   ${backend.url}/graphql
  gateway (sidecar)        ${gw}/graphql
  admin                    ${adm}/metrics  ${adm}/readyz  ${adm}/config
  control plane            ${cpu}/openapi.json  (SQLite in ${dir})

Try:
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":"{ hello(name: \\"igw\\") }"}'
  curl -s ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: acme' -d '{"query":"{ entities(first: 3) { id name email } }"}'
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":"mutation { updateEntity(id: \\"1\\", name: \\"Renamed\\") { id name updatedAt } }"}'
  curl -s ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: nobody' -d '{"query":"{ hello }"}'     # unknown tenant -> demo default
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":'                                          # malformed -> 400 BAD_REQUEST
  curl -s '${gw}/export/entities.ndjson?count=5'
  curl -s ${adm}/metrics | grep igw_requests_total

Subscription over WebSocket (graphql-transport-ws), e.g. with websocat:
  websocat -H 'Sec-WebSocket-Protocol: graphql-transport-ws' ws://127.0.0.1:${proxy!.port}/graphql
    {"type":"connection_init"}
    {"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 5) }"}}

Control plane (the gateway above takes its config from it; every change is validated, audited, pushed):
  export IGW_TOKEN=${adminToken}
  curl -s ${cpu}/v1/tenants -H "authorization: Bearer $IGW_TOKEN"
  curl -s -X PUT ${cpu}/v1/tenants/initech -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"tier":"bronze"}'
  curl -s -X PUT ${cpu}/v1/tenants/acme/quotas/graphql -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"limitPerDay":1000}'
  curl -s -X PUT ${cpu}/v1/tenants/acme -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"tier":"platinum"}'   # 400 names the path
  curl -s ${cpu}/v1/proxies -H "authorization: Bearer $IGW_TOKEN"          # applied version, last NACK
  curl -s ${cpu}/v1/audit -H "authorization: Bearer $IGW_TOKEN"            # signed, hash-chained
  curl -s "${cpu}/v1/tenants/demo/statement" -H "authorization: Bearer $IGW_TOKEN"
  curl -s ${cpu}/graphql -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"query":"{ quotas(tenant: \\"acme\\") { kind limitPerDay usedToday } }"}'
  curl -s ${cpu}/graphql -H "authorization: Bearer ${viewerToken}" -H 'content-type: application/json' -d '{"query":"mutation { setQuota(kind: \\"graphql\\", limitPerDay: 5) { kind } }"}'   # FORBIDDEN: viewer
  igw audit verify --db sqlite:${join(dir, 'igw.db')} --signing-key ${join(dir, 'signing-key.pem')}

Ctrl-C stops everything.
`)
  installSignals(proxy!.logger, async () => {
    await client.close()
    await proxy!.close()
    await cp.close()
    await backend.close()
  })
}
