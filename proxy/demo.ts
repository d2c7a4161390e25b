// `igw demo`: a sample GraphQL backend, the control plane (SQLite in a temp directory) and the
// gateway in sidecar mode taking its config from that control plane, all in one process tree,
// no Redis or Docker. Prints copy-paste examples, including admin tokens for the control plane.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { ConfigError } from '../config/load.ts'
import { listenAddressesOverlap, splitListenAddress } from '../config/primitives.ts'
import type { Flags } from './cli.ts'
import { configFromDocument, installSignals } from './cli.ts'
import { startDemoBackend } from './demo-backend.ts'
import { createLogger } from './log.ts'
import { StartupError, startProxy } from './supervisor.ts'

/**
 * The demo's config document as the control plane stores it (addresses come from flags). It runs
 * the filters a user came to see: quotas with RateLimit headers, persisted queries, the response
 * cache with write-through invalidation, and DLP on the NDJSON/CSV exports (keyring in `dir`).
 */
export function demoDocument(backendUrl: string, dir: string): Record<string, unknown> {
  return {
    mode: 'sidecar',
    upstreams: { backend: { url: backendUrl, healthCheck: { path: '/healthz' } } },
    tenants: {
      demo: { tier: 'gold', displayName: 'Demo tenant' },
      acme: { tier: 'silver', timezone: 'America/New_York' },
    },
    quotas: {
      defaults: { graphql: { rate: 50, burst: 100, limitPerDay: 100000 } },
      tenants: { acme: { graphql: { rate: 5, burst: 30, limitPerDay: 1000 } } }, // slow refill: the printed loop shows 429s even on a busy machine
    },
    persistedDocuments: {
      operations: {
        topEntities: { document: 'query TopEntities { entities(first: 5) { id name } }', costUnits: 5, cacheTtlSeconds: 60 },
      },
    },
    dlp: {
      presets: { demo_masked: { email: 'mask', phone_e164: 'mask', ssn_us: 'tokenize', credit_card: 'tokenize', iban: 'tokenize' } },
      defaultPreset: 'demo_masked',
      tenants: { acme: { preset: 'tokenize_strict' } },
      keyring: { provider: 'local', file: join(dir, 'dlp-keyring.json'), create: true },
      policy: { enabled: true, bundle: 'dlp', allowedPresets: ['demo_masked', 'tokenize_strict'] },
      phoneRegion: 'US',
    },
    routes: [
      {
        name: 'export',
        match: { pathPrefix: '/export/' },
        upstream: 'backend',
        type: 'http',
        timeouts: { totalMs: 0 },
        filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'demo' }, { name: 'dlp', exports: { paths: [{ prefix: '/export/', format: 'auto' }] } }],
      },
      {
        name: 'graphql',
        match: { pathPrefix: '/' },
        upstream: 'backend',
        type: 'graphql',
        filters: [
          { name: 'request-id' },
          { name: 'tenant', defaultTenant: 'demo' },
          { name: 'persisted' },
          { name: 'quota', kind: 'graphql' },
          { name: 'cache', ttlSeconds: 30, refreshAheadSeconds: 10 },
        ],
      },
    ],
  }
}

/** Where a client reaches a listen address: a wildcard or no host means this machine's loopback. */
export function printableHost(listen: string): string {
  const host = splitListenAddress(listen).host
  if (host === undefined || host === '0.0.0.0' || host === '::' || host === '*') return '127.0.0.1'
  return host.includes(':') ? `[${host}]` : host
}

/**
 * IGW_DEMO_BACKEND / IGW_DEMO_CONTROL_PLANE: `host:port` or `:port`. A bad one was a RangeError
 * stack trace (the control plane) or Node's "options.port should be" naming no variable (the
 * backend), exit 1. Throws ConfigError naming the variable and the value (exit 78).
 */
export function demoAddress(variable: 'IGW_DEMO_BACKEND' | 'IGW_DEMO_CONTROL_PLANE', fallback: string, env: NodeJS.ProcessEnv = process.env): { host: string; port: number } {
  const text = env[variable] || fallback
  const { host, port } = splitListenAddress(text)
  if (!text.includes(':') || !/^\d+$/.test(text.slice(text.lastIndexOf(':') + 1)) || port > 65535) {
    throw new ConfigError(variable, [`expected host:port or :port with a port from 0 to 65535, got "${text}"`])
  }
  return { host: host ?? '127.0.0.1', port }
}

/** An IGW_DEMO_* variable as set, or its default. */
const env = (variable: string, fallback: string): string => process.env[variable] || fallback

/**
 * The gateway and admin addresses against the demo's own backend and control plane. `igw demo
 * --listen :4000` started the backend there, then the gateway failed on it: a NACKed head, three
 * log lines and "another process listens there", the process being the demo itself (exit 69).
 * Throws ConfigError naming both settings (exit 78), before anything starts.
 */
export function assertNoDemoCollision(listen: string, adminListen: string, backend: { host: string; port: number }, controlPlane: { host: string; port: number }): void {
  const ours: [string, string, { host: string; port: number }][] = [
    ['IGW_DEMO_BACKEND', 'the sample backend', backend],
    ['IGW_DEMO_CONTROL_PLANE', 'the control plane', controlPlane],
  ]
  for (const [flag, address] of [['--listen', listen], ['--admin-listen', adminListen]] as const) {
    for (const [variable, what, at] of ours) {
      if (!listenAddressesOverlap(splitListenAddress(address), at)) continue
      const set = process.env[variable] ? `${variable}=${process.env[variable]}` : `${at.host}:${at.port} by default; ${variable} moves it`
      throw new ConfigError(flag, [`${address} takes port ${at.port}, where ${what} listens (${set}): give one of them another port`])
    }
  }
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use (another process listens there)',
  EADDRNOTAVAIL: 'address not available on this host',
  EACCES: 'permission denied (ports below 1024 need privileges)',
}

/**
 * Refuses a gateway or admin address another process listens on, before anything starts. The
 * gateway's worker threads listen with `reusePort`, and so does any other igw: a demo started
 * while another igw (a forgotten demo, `igw proxy` with its default `:8080`) held the port bound
 * it beside that one, printed its examples, and the kernel then split the connections between
 * the two processes (half the printed curls reached the other gateway, its config, its
 * quotas). A probe bound without `reusePort` is refused by any listener there, as a plain
 * `listen` is. (A taken admin port was found only after the backend and the control plane had
 * started, as a NACKed head and three log lines before the one naming it.)
 */
export async function assertListenFree(what: string, address: string): Promise<void> {
  const { host, port } = splitListenAddress(address)
  if (port === 0) return
  const probe = createNetServer()
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject)
      probe.listen({ host, port }, resolve)
    })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const reason = code !== undefined ? LISTEN_REASONS[code] : undefined
    if (reason === undefined) return // anything else: the proxy's own listen reports it
    throw new StartupError(`cannot listen on ${address} (${what}): ${reason} [${code}]`, 'listen')
  } finally {
    await new Promise<void>((resolve) => (probe.listening ? probe.close(() => resolve()) : resolve()))
  }
}

export async function runDemo(flags: Flags): Promise<void> {
  // Loopback unless asked: the sample backend takes mutations and the admin port serves /config,
  // which a demo on a laptop must not offer to its network (as the backend and control plane).
  const listen = flags.listen ?? '127.0.0.1:8080'
  const adminListen = flags['admin-listen'] ?? '127.0.0.1:9901'
  const proxyFlags: Flags = { ...flags, listen, 'admin-listen': adminListen }
  // The proxy's flags (--listen :99999, --workers abc) are checked before anything starts: found
  // later, they came back as a NACKed control plane head with no last-known-good snapshot.
  const checked = configFromDocument(demoDocument('http://127.0.0.1:4000', tmpdir()), proxyFlags, 'flags')
  const backendAddr = demoAddress('IGW_DEMO_BACKEND', '127.0.0.1:4000')
  const cpAddr = demoAddress('IGW_DEMO_CONTROL_PLANE', '127.0.0.1:7070')
  assertNoDemoCollision(checked.listen, checked.admin.listen, backendAddr, cpAddr)
  await assertListenFree('listen', checked.listen)
  await assertListenFree('admin.listen', checked.admin.listen)
  let backend
  try {
    backend = await startDemoBackend({ host: backendAddr.host, port: backendAddr.port })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const reason = e.syscall === 'listen' && e.code !== undefined ? LISTEN_REASONS[e.code] : undefined
    console.error(
      e.code === 'EADDRINUSE'
        ? `igw demo: port ${backendAddr.port} is taken; run the sample backend elsewhere with IGW_DEMO_BACKEND=127.0.0.1:4001`
        : reason !== undefined
          ? `igw demo: cannot listen on ${env('IGW_DEMO_BACKEND', '127.0.0.1:4000')} (IGW_DEMO_BACKEND, the sample backend): ${reason} [${e.code}]`
          : `igw demo: cannot start the sample backend: ${e.message}`,
    )
    process.exit(reason !== undefined ? 69 : 1) // EX_UNAVAILABLE, as for the proxy's own addresses
  }

  // The control plane: SQLite and its signing key in a fresh temp directory, an HS256 secret
  // made up for this run, and two tokens minted with it (an admin, and the proxy's).
  const { startControlPlane } = await import('../control-plane/server.ts')
  const { loadOrCreateSigningKey } = await import('../control-plane/signing.ts')
  const { mintToken } = await import('../control-plane/auth.ts')
  const { startProxyFromControlPlane } = await import('./control-plane-client.ts')
  const dir = mkdtempSync(join(tmpdir(), 'igw-demo-'))
  // The run's SQLite, signing key and DLP keyring go with it, however it ends (Ctrl-C after the
  // drain, a second Ctrl-C, a port taken at start): every run used to leave its igw-demo-* behind.
  process.once('exit', () => {
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch {}
  })
  const secret = randomBytes(32).toString('base64url')
  // One log format with the proxy's (level names, ISO time): all three write to this stdout.
  const cpLogger = createLogger('warn', pino.destination({ dest: 1, sync: true }), { component: 'control-plane' })
  const cpOptions = { db: `sqlite:${join(dir, 'igw.db')}`, host: cpAddr.host, auth: { secret }, signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')), seed: demoDocument(backend.url, dir), logger: cpLogger }
  let cp
  try {
    cp = await startControlPlane({ ...cpOptions, port: cpAddr.port })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    // Not on this host, or a privileged port: Node's own words ("listen EADDRNOTAVAIL: address not
    // available 10.1.2.3:7070") named no variable to change.
    const reason = e.syscall === 'listen' && e.code !== 'EADDRINUSE' && e.code !== undefined ? LISTEN_REASONS[e.code] : undefined
    if (reason !== undefined) throw new StartupError(`cannot listen on ${env('IGW_DEMO_CONTROL_PLANE', '127.0.0.1:7070')} (IGW_DEMO_CONTROL_PLANE, the control plane): ${reason} [${e.code}]`, 'listen')
    if (e.code !== 'EADDRINUSE') throw err
    // :7070 is taken: any free port will do for a demo. The first attempt already committed the
    // seed to this store, so it is not passed again: given, it was reported as "not used".
    cp = await startControlPlane({ ...cpOptions, seed: undefined, port: 0 })
  }
  const adminToken = await mintToken(secret, { sub: 'demo-admin', roles: ['admin'] })
  const viewerToken = await mintToken(secret, { sub: 'demo-viewer', roles: ['viewer'], tenant: 'demo' })
  const proxyToken = await mintToken(secret, { sub: 'demo-proxy', roles: ['proxy'] })

  const clientLog = createLogger('warn', pino.destination({ dest: 1, sync: true }), { component: 'control-plane-client' })
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
  // The addresses as validated: a bare port (`--listen 8081`, IGW_LISTEN=8081) is `:8081` there,
  // and read as typed its digits before the last became the host (`http://808:8081`).
  const gw = `http://${printableHost(checked.listen)}:${proxy!.port}`
  const adm = `http://${printableHost(checked.admin.listen)}:${proxy!.adminPort}`
  const ws = `ws://${printableHost(checked.listen)}:${proxy!.port}`
  const cpu = cp.url
  process.stderr.write(`
IntelGraph Gateway demo
  backend (graphql-yoga)   ${backend.url}/graphql
  gateway (sidecar)        ${gw}/graphql
  admin                    ${adm}/metrics  ${adm}/readyz  ${adm}/config
  control plane            ${cpu}/openapi.json  (SQLite in ${dir})

Try:
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":"{ hello(name: \\"igw\\") }"}'
  curl -si ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: acme' -d '{"query":"{ entities(first: 3) { id name } }"}' | grep -iE '^(x-cache|ratelimit)'   # MISS, then HIT
  curl -s ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: acme' -d '{"query":"mutation { updateEntity(id: \\"1\\", name: \\"Renamed\\") { id name updatedAt } }"}'   # write-through: the cached list is dropped
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"topEntities"}}}'   # persisted id, cost 5
  for i in $(seq 40); do curl -s -o /dev/null -w '%{http_code} ' ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: acme' -d '{"query":"{ hello }"}'; done; echo   # acme: burst 30, then 429 with Retry-After
  curl -s ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: nobody' -d '{"query":"{ hello }"}'     # unknown tenant -> demo default
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":'                                          # malformed -> 400 BAD_REQUEST
  curl -s '${gw}/export/entities.ndjson?count=3'                           # DLP: e-mails and phones masked, SSNs tokenized
  curl -s '${gw}/export/entities.csv?count=3' -H 'x-tenant-id: acme'       # acme's preset tokenize_strict blocks SSNs: 403 DLP_BLOCKED
  curl -s ${adm}/metrics | grep -E '^igw_(requests_total|cache_requests_total|quota_rejections_total|dlp_actions_total)'

Subscription over WebSocket (graphql-transport-ws), e.g. with websocat (send the first line, wait for connection_ack, then the second):
  websocat --protocol graphql-transport-ws ${ws}/graphql
    {"type":"connection_init"}
    {"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 5) }"}}

Control plane (the gateway above takes its config from it; every change is validated, audited, pushed):
  export IGW_TOKEN=${adminToken}
  curl -s ${cpu}/v1/tenants -H "authorization: Bearer $IGW_TOKEN"
  curl -s -X PUT ${cpu}/v1/tenants/initech -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"tier":"bronze"}'
  curl -s -X PUT ${cpu}/v1/tenants/acme/quotas/graphql -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"limitPerDay":5000}'   # pushed: acme's RateLimit-Policy says "daily";q=5000
  curl -s -X PUT ${cpu}/v1/tenants/acme -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"tier":"platinum"}'   # 400 names the path
  curl -s ${cpu}/v1/proxies -H "authorization: Bearer $IGW_TOKEN"          # applied version, last NACK
  curl -s ${cpu}/v1/audit -H "authorization: Bearer $IGW_TOKEN"            # signed, hash-chained
  curl -s "${cpu}/v1/tenants/demo/statement" -H "authorization: Bearer $IGW_TOKEN"
  curl -s ${cpu}/graphql -H "authorization: Bearer $IGW_TOKEN" -H 'content-type: application/json' -d '{"query":"{ quotas(tenant: \\"acme\\") { kind limitPerDay usedToday } }"}'
  curl -s ${cpu}/graphql -H "authorization: Bearer ${viewerToken}" -H 'content-type: application/json' -d '{"query":"mutation { setQuota(kind: \\"graphql\\", limitPerDay: 5) { kind } }"}'   # FORBIDDEN: viewer
  npx igw audit verify --db sqlite:${join(dir, 'igw.db')} --signing-key ${join(dir, 'signing-key.pem')}

Ctrl-C stops everything (and removes ${dir}).
`)
  installSignals(proxy!.logger, async () => {
    await client.close()
    await proxy!.close()
    await cp.close()
    await backend.close()
  })
}
