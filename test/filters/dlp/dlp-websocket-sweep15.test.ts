// DLP on a route whose WebSockets the gateway terminates: operations sent over the socket run the
// request phase only (no response phase rewrites what comes back), so an export asked for there
// must be refused, not answered with the raw records it masks over HTTP.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawExchange, startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { WebSocket } from 'ws'
import { GqlClient } from '../../proxy/subscriptions/clients.ts'

describe('DLP exports over a terminated WebSocket', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  let passthrough: TestProxy

  beforeAll(async () => {
    demo = await startDemoBackend()
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-ws-')), 'keys', 'keyring.json')
    proxy = await startTestProxy({
      tenants: { acme: {} },
      dlp: { keyring: { file: keyring }, presets: { tok_all: { email: 'tokenize', phone_e164: 'hash', ssn_us: 'tokenize' } }, policy: { allowedPresets: ['tok_all'] } },
      routes: [
        {
          name: 'api',
          upstream: demo.url,
          type: 'graphql',
          websocket: { mode: 'terminate' },
          filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tok_all', exports: { graphql: { responsePaths: ['entities'] } } }],
        },
      ],
    } as never)
    // The default WebSocket mode relays frames to the backend unread.
    passthrough = await startTestProxy({
      tenants: { acme: {} },
      dlp: { keyring: { file: keyring.replace('keyring.json', 'keyring-pt.json') }, presets: { tok_all: { email: 'tokenize', phone_e164: 'hash', ssn_us: 'tokenize' } }, policy: { allowedPresets: ['tok_all'] } },
      routes: [
        { name: 'api', match: { pathPrefix: '/graphql' }, upstream: demo.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tok_all', exports: { graphql: { responsePaths: ['entities'] } } }] },
        { name: 'rest', match: { pathPrefix: '/' }, upstream: demo.url, type: 'http', filters: [{ name: 'dlp', preset: 'tok_all', exports: { paths: [{ prefix: '/export/' }] } }] },
      ],
    } as never)
  })
  afterAll(async () => {
    await passthrough?.close()
    await proxy?.close()
    await demo?.close()
  })

  it('over HTTP the export is tokenized (the control)', async () => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ entities { email } }' }) })
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).toMatch(/tok_email_/)
    expect(text).not.toMatch(/@example\.com/)
  })

  it('over graphql-ws the same export is refused with DLP_BLOCKED for that operation only; the socket and other operations go on', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    try {
      // A live subscription holds the (lazy) client's socket open for the whole test.
      const live = c.subscribe('subscription { countdown(from: 1000, intervalMs: 200) }')
      await expect.poll(() => live.received.payloads.length, { timeout: 10_000 }).toBeGreaterThan(0)
      const exp = c.subscribe('{ entities { email } }')
      await expect.poll(() => exp.received.error !== undefined || exp.received.completed, { timeout: 10_000 }).toBe(true)
      // Nothing of the records reached the client.
      expect(JSON.stringify(exp.received.payloads)).not.toMatch(/@example\.com/)
      const errors = (exp.received.error ?? []) as { message: string; extensions?: { code?: string } }[]
      expect(errors.map((e) => e.extensions?.code)).toEqual(['DLP_BLOCKED'])
      // Same socket: a query outside the export scope is answered.
      const hello = c.subscribe('query { hello(name: "ws") }')
      await expect.poll(() => hello.received.completed, { timeout: 10_000 }).toBe(true)
      expect(hello.received.payloads).toEqual([{ data: { hello: 'Hello, ws!' } }])
      expect(c.closed).toBeUndefined()
      expect(live.received.error).toBeUndefined()
      live.stop()
      const m = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
      expect(metricSum(m, 'igw_dlp_exports_total', 'outcome="denied"')).toBeGreaterThanOrEqual(1)
    } finally {
      await c.dispose()
    }
  })

  it('a passthrough WebSocket on a route with GraphQL exports (or to an export path) is refused at the upgrade: nothing could inspect its frames', async () => {
    // A graphql-transport-ws session by hand (the tenant in a header, as a server-side client sends it).
    const seen = await new Promise<{ status?: number; messages: string[] }>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${passthrough.port}/graphql`, 'graphql-transport-ws', { headers: { 'x-tenant-id': 'acme' } })
      const messages: string[] = []
      const t = setTimeout(() => {
        ws.terminate()
        resolve({ messages })
      }, 5_000)
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(t)
        resolve({ status: res.statusCode, messages })
      })
      ws.on('error', () => {})
      ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })))
      ws.on('message', (d) => {
        messages.push(String(d))
        if (JSON.parse(String(d)).type === 'connection_ack') ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: '{ entities { email } }' } }))
        if (JSON.parse(String(d)).type === 'complete') {
          clearTimeout(t)
          ws.close()
          resolve({ messages })
        }
      })
    })
    expect(seen.messages.join('\n')).not.toMatch(/@example\.com/)
    expect(seen.status).toBe(403)
    // The upgrade itself is answered 403 DLP_BLOCKED, on the export path too.
    for (const path of ['/graphql', '/export/users']) {
      const raw = (await rawExchange(passthrough.port, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: graphql-transport-ws\r\nx-tenant-id: acme\r\n\r\n`, 5000)).toString('latin1')
      expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden')
      expect(raw).toMatch(/"code":"DLP_BLOCKED"/)
    }
    // The same DLP filter lets an upgrade to a path that is no export through (whatever the backend answers).
    const other = (await rawExchange(passthrough.port, 'GET /not-an-export HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', 5000).catch((e: Error) => Buffer.from(e.message))).toString('latin1')
    expect(other).not.toMatch(/DLP_BLOCKED/)
    expect(other).toMatch(/HTTP\/1\.1 \d{3} /)
  })
})
