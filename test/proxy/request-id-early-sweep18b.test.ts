// Requests answered before the route's request-id filter ran (refused before the chain: 413, 415,
// 400, 405, 408; a filter ahead of it refusing; a CORS preflight, which runs no filter) are named
// by that filter's rule — its header, its trustIncoming, its echo — on the response, toward the
// backend and in the access line. Through a real igw proxy with a node:http backend and undici.
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

async function setup(filters: unknown[]): Promise<{ backend: RawBackend; proxy: TestProxy }> {
  const backend = await startRawBackend((req, res) => {
    req.resume()
    req.on('end', () => {
      if (req.method === 'OPTIONS') {
        res.writeHead(204, { 'access-control-allow-origin': '*' })
        res.end()
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"data":{"ok":true}}')
    })
  })
  cleanups.push(backend.close)
  const proxy = await startTestProxy({
    tenants: { acme: {} },
    routes: [{ name: 'gql', upstream: backend.url, type: 'graphql', maxBodyBytes: 1024, filters: filters as never }],
  })
  cleanups.push(() => proxy.close())
  return { backend, proxy }
}

async function accessLine(proxy: TestProxy, status: number): Promise<Record<string, unknown>> {
  await expect.poll(() => proxy.logs.lines.some((l) => l.msg === 'access' && l.status === status), { timeout: 10_000 }).toBe(true)
  return proxy.logs.lines.find((l) => l.msg === 'access' && l.status === status)!
}

describe('a request refused before the chain carries the id the request-id filter would give it', () => {
  it('its own header: a 413 answered with the kept x-correlation-id (not x-request-id), logged under it', async () => {
    const { proxy } = await setup([{ name: 'request-id', header: 'x-correlation-id' }])
    const big = await request(`${proxy.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'client-says', 'x-correlation-id': 'corr-413' },
      body: JSON.stringify({ query: `{ ${'a'.repeat(2000)} }` }),
    })
    expect(big.statusCode).toBe(413)
    await big.body.text()
    expect(big.headers['x-correlation-id']).toBe('corr-413')
    expect((await accessLine(proxy, 413)).reqId).toBe('corr-413')
    // The control: a request that passes the chain is named the same way.
    const ok = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-correlation-id': 'corr-200' }, body: '{"query":"{ ok }"}' })
    expect(ok.statusCode).toBe(200)
    await ok.body.text()
    expect(ok.headers['x-correlation-id']).toBe('corr-200')
    expect((await accessLine(proxy, 200)).reqId).toBe('corr-200')
  })

  it('trustIncoming: false — a 415, a 400 and a 405 get a generated id, never the client-chosen one, echoed and logged alike', async () => {
    const { proxy } = await setup([{ name: 'request-id', trustIncoming: false }])
    const cases: [number, Parameters<typeof request>[1]][] = [
      [415, { method: 'POST', headers: { 'content-type': 'text/plain', 'x-request-id': 'spoofed-415' }, body: '{"query":"{ ok }"}' }],
      [400, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'spoofed-400' }, body: '{"query":' }],
      [405, { method: 'PATCH', headers: { 'x-request-id': 'spoofed-405' } }],
    ]
    for (const [status, opts] of cases) {
      const r = await request(`${proxy.url}/graphql`, opts)
      expect(r.statusCode).toBe(status)
      await r.body.text()
      const id = r.headers['x-request-id']
      expect(id).toMatch(UUID)
      const line = await accessLine(proxy, status)
      expect(line.reqId).toBe(id)
      expect(JSON.stringify(proxy.logs.lines)).not.toContain(`spoofed-${status}`)
    }
  })

  it('no incoming id: a refusal still gets one, echoed and logged', async () => {
    const { proxy } = await setup([{ name: 'request-id' }])
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '[not json' })
    expect(r.statusCode).toBe(400)
    await r.body.text()
    expect(r.headers['x-request-id']).toMatch(UUID)
    expect((await accessLine(proxy, 400)).reqId).toBe(r.headers['x-request-id'])
  })

  it('a filter ahead of request-id refusing: the 403 carries the id and the line logs it', async () => {
    const { proxy } = await setup([{ name: 'tenant' }, { name: 'request-id', trustIncoming: false }])
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'spoofed-403' }, body: '{"query":"{ ok }"}' })
    expect(r.statusCode).toBe(403)
    await r.body.text()
    expect(r.headers['x-request-id']).toMatch(UUID)
    expect((await accessLine(proxy, 403)).reqId).toBe(r.headers['x-request-id'])
  })

  it('a CORS preflight (no filter runs) is named too: the backend and the client get the same new id', async () => {
    const { backend, proxy } = await setup([{ name: 'request-id', trustIncoming: false }])
    const r = await request(`${proxy.url}/graphql`, {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'x-request-id': 'spoofed-204' },
    })
    expect(r.statusCode).toBe(204)
    await r.body.text()
    const id = r.headers['x-request-id']
    expect(id).toMatch(UUID)
    expect(backend.requests[0]!.headers['x-request-id']).toBe(id)
    expect((await accessLine(proxy, 204)).reqId).toBe(id)
  })
})
