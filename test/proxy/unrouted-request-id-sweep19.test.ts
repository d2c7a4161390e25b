// A request answered before any route ran (no route matched: 404; refused before routing: a bad
// target, TRACE) carried no request id and its access line none: a client's report of such an
// answer could not be found in the log. It gets a new id, never the client's (there is no route
// rule saying to trust it), sent as x-request-id and written on the access line.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

describe('request id of unrouted answers', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    demo = await startDemoBackend()
    proxy = await startTestProxy({ log: { level: 'info', access: { enabled: true } }, mode: 'ingress', routes: [{ name: 'api', match: { host: 'api.example.com' }, upstream: demo.url, type: 'http' }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
  })

  const lineOf = async (id: string) => {
    await expect.poll(() => proxy.logs.find('access (no route)').some((l) => (l as { reqId?: string }).reqId === id), { timeout: 5000 }).toBe(true)
    return proxy.logs.find('access (no route)').find((l) => (l as { reqId?: string }).reqId === id) as Record<string, unknown>
  }

  it('404 for no route: a new id (not the client\'s) in the reply and on the access line', async () => {
    const r = await request(`${proxy.url}/nothing-here`, { headers: { host: 'other.example.net', 'x-request-id': 'client-chosen' } })
    expect(r.statusCode).toBe(404)
    await r.body.dump()
    const id = r.headers['x-request-id']
    expect(typeof id).toBe('string')
    expect(id).toMatch(UUID)
    const line = await lineOf(id as string)
    expect(line.status).toBe(404)
    expect(line.code).toBe('NOT_FOUND')
    expect(proxy.logs.find('access (no route)').some((l) => (l as { reqId?: string }).reqId === 'client-chosen')).toBe(false)
  })

  it('refused before routing (TRACE): a new id in the reply and on the line; two answers, two ids', async () => {
    const a = await request(`${proxy.url}/`, { method: 'TRACE', headers: { host: 'api.example.com' } })
    const b = await request(`${proxy.url}/`, { method: 'TRACE', headers: { host: 'api.example.com' } })
    await a.body.dump()
    await b.body.dump()
    expect(a.statusCode).toBe(405)
    expect(a.headers['x-request-id']).toMatch(UUID)
    expect(b.headers['x-request-id']).toMatch(UUID)
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id'])
    const line = await lineOf(a.headers['x-request-id'] as string)
    expect(line.status).toBe(405)
  })
})
