// quotas.<tenant>.subscriptions.maxConcurrent on a route whose WebSockets are relayed as they are
// (passthrough): an open socket holds its slot until it ends. The slot was given back at the 101,
// so any number of sockets opened. Real proxy, real graphql-yoga backend, real `ws` clients.
import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Outcome = { open: true; ws: WebSocket } | { open: false; status: number; body: string }

function connect(port: number, tenant: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/graphql`, 'graphql-transport-ws', { headers: { 'x-tenant-id': tenant } })
    ws.once('open', () => resolve({ open: true, ws }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ open: false, status: res.statusCode ?? 0, body }))
    })
    ws.once('error', reject)
  })
}

function closed(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve()
    ws.once('close', () => resolve())
    ws.close()
  })
}

describe('maxConcurrent on passthrough WebSockets', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    demo = await startDemoBackend()
    proxy = await startTestProxy({
      tenants: { acme: {}, globex: {} },
      quotas: { tenants: { acme: { subscriptions: { maxConcurrent: 2 } } }, qos: { maxInFlight: 1 } },
      routes: [{ name: 'ws', upstream: demo.url, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
  })

  it('a third socket over maxConcurrent 2 is refused 429; closing one frees its slot; open sockets are not in-flight load', async () => {
    const a = await connect(proxy.port, 'acme')
    const b = await connect(proxy.port, 'acme')
    expect(a.open && b.open).toBe(true)
    // qos.maxInFlight 1: two open sockets counted as in-flight requests would shed everyone.
    const other = await connect(proxy.port, 'globex')
    expect(other.open).toBe(true)
    const c = await connect(proxy.port, 'acme')
    expect(c.open).toBe(false)
    if (!c.open) {
      expect(c.status).toBe(429)
      expect(JSON.parse(c.body).errors[0].extensions).toMatchObject({ code: 'RATE_LIMITED', policy: 'concurrent', limit: 2 })
    }
    await closed((a as { ws: WebSocket }).ws)
    await expect
      .poll(async () => {
        const d = await connect(proxy.port, 'acme')
        if (d.open) await closed(d.ws)
        return d.open
      }, { timeout: 10_000, interval: 200 })
      .toBe(true)
    await closed((b as { ws: WebSocket }).ws)
    await closed((other as { ws: WebSocket }).ws)
  })

  it('under another kind (graphql, the default) an open socket does not hold an HTTP request slot', async () => {
    const p = await startTestProxy({
      tenants: { acme: {} },
      quotas: { tenants: { acme: { graphql: { maxConcurrent: 1 } } } },
      routes: [{ name: 'gql', upstream: demo.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    } as never)
    try {
      const a = await connect(p.port, 'acme')
      const b = await connect(p.port, 'acme')
      expect(a.open && b.open).toBe(true)
      const r = await fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ hello }"}' })
      expect(r.status).toBe(200)
      await r.text()
      await closed((a as { ws: WebSocket }).ws)
      await closed((b as { ws: WebSocket }).ws)
    } finally {
      await p.close()
    }
  })
})
