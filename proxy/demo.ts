// `igw demo`: a sample GraphQL backend and the gateway in sidecar mode in front of it, all in
// one process tree, no Redis or Docker. Prints copy-paste examples.
import { splitListenAddress } from '../config/primitives.ts'
import { validateConfig } from '../config/load.ts'
import type { Flags } from './cli.ts'
import { installSignals } from './cli.ts'
import { startDemoBackend } from './demo-backend.ts'
import { startProxy } from './supervisor.ts'

export function demoConfig(backendUrl: string, listen: string, adminListen: string, workers: number | 'auto') {
  return validateConfig(
    {
      mode: 'sidecar',
      listen,
      admin: { listen: adminListen },
      workers,
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
    },
    'demo config',
  )
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
  const workers = flags.workers === undefined || flags.workers === 'auto' ? 'auto' : Number(flags.workers)
  const config = demoConfig(backend.url, /^\d+$/.test(listen) ? `:${listen}` : listen, /^\d+$/.test(adminListen) ? `:${adminListen}` : adminListen, workers)
  const proxy = await startProxy({ config })
  const gw = `http://127.0.0.1:${proxy.port}`
  const adm = `http://127.0.0.1:${proxy.adminPort}`
  process.stderr.write(`
IntelGraph Gateway demo
  backend (graphql-yoga)   ${backend.url}/graphql
  gateway (sidecar)        ${gw}/graphql
  admin                    ${adm}/metrics  ${adm}/readyz  ${adm}/config

Try:
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":"{ hello(name: \\"igw\\") }"}'
  curl -s ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: acme' -d '{"query":"{ entities(first: 3) { id name email } }"}'
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":"mutation { updateEntity(id: \\"1\\", name: \\"Renamed\\") { id name updatedAt } }"}'
  curl -s ${gw}/graphql -H 'content-type: application/json' -H 'x-tenant-id: nobody' -d '{"query":"{ hello }"}'     # unknown tenant -> demo default
  curl -s ${gw}/graphql -H 'content-type: application/json' -d '{"query":'                                          # malformed -> 400 BAD_REQUEST
  curl -s '${gw}/export/entities.ndjson?count=5'
  curl -s ${adm}/metrics | grep igw_requests_total

Subscription over WebSocket (graphql-transport-ws), e.g. with websocat:
  websocat -H 'Sec-WebSocket-Protocol: graphql-transport-ws' ws://127.0.0.1:${proxy.port}/graphql
    {"type":"connection_init"}
    {"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 5) }"}}

Ctrl-C stops everything.
`)
  installSignals(proxy.logger, async () => {
    await proxy.close()
    await backend.close()
  })
}
