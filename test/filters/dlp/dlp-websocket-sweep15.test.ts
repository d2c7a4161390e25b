// DLP on a route whose WebSockets the gateway terminates: operations sent over the socket run the
// request phase only (no response phase rewrites what comes back), so an export asked for there
// must be refused, not answered with the raw records it masks over HTTP.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { GqlClient } from '../../proxy/subscriptions/clients.ts'

describe('DLP exports over a terminated WebSocket', () => {
  let demo: DemoBackend
  let proxy: TestProxy

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
  })
  afterAll(async () => {
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
})
