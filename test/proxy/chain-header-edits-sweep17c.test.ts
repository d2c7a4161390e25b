// ctx.setUpstreamHeader / ctx.addResponseHeader through a real WorkerProxy, a real backend and a
// real client. The defects: an edit HTTP cannot carry, or of a header the proxy owns (hop-by-hop,
// Host, Content-Length), was accepted and broke the exchange somewhere else — undici refused the
// upstream request (a 502 UPSTREAM_UNAVAILABLE blaming the backend, no filter error counted), or a
// response went out with broken framing (Transfer-Encoding beside Content-Length, a Content-Length
// cutting the body short with the rest left on a keep-alive connection) or a hop-by-hop header.
// Now the call throws: a failure of the calling filter, counted under its name, by its failMode.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter, RequestContext } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

async function startWith(first: Filter, backend: RawBackend, failMode: 'open' | 'closed') {
  const mods: FilterModules = { ...filterModules, tenant: { create: () => first } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'request-id' }, { name: 'tenant', failMode }] }],
  })
  const logs = new LogCapture()
  const metrics = new ProxyMetrics(new Registry())
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`
  const filterErrors = async (name: string): Promise<number> => {
    const text = await metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
    const m = new RegExp(`igw_filter_errors_total\\{filter="${name}"\\} (\\d+)`).exec(text)
    return m === null ? 0 : Number(m[1])
  }
  return { url, logs, filterErrors, close: () => proxy.drain(100) }
}

type Echo = { headers: Record<string, string>; rawHeaders: string[] }
const filterWith = (edit: (ctx: RequestContext) => void): Filter => ({ name: 'edits', onRequest: (ctx) => void edit(ctx) })

describe('chain header edits (sweep17c)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it.each([
    ['Transfer-Encoding', 'chunked'],
    ['Upgrade', 'websocket'],
    ['Host', 'other.example'],
    ['X-Evil', 'a\r\nx-injected: 1'],
    ['bad name', 'v'],
  ])('setUpstreamHeader(%j) fails the filter (500, counted and logged under its name), not the upstream (502)', async (name, value) => {
    const s = await startWith(filterWith((ctx) => ctx.setUpstreamHeader(name, value)), backend, 'closed')
    try {
      const before = backend.requests.length
      const res = await request(`${s.url}/x`)
      const body = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
      expect(res.statusCode).toBe(500)
      expect(body.errors[0]!.extensions.code).toBe('INTERNAL_SERVER_ERROR')
      expect(body.errors[0]!.message).toBe('filter "edits" failed')
      expect(res.headers['x-request-id']).toBeDefined() // the chain's headers still reach the client
      expect(backend.requests.length).toBe(before)
      expect(await s.filterErrors('edits')).toBe(1)
      await expect.poll(() => s.logs.find('filter error').length, { timeout: 10_000 }).toBe(1)
      expect(s.logs.find('filter error')[0]).toMatchObject({ filter: 'edits', failMode: 'closed' })
      expect(s.logs.find('upstream request failed')).toHaveLength(0)
    } finally {
      await s.close()
    }
  })

  it('a fail-open filter whose upstream edit is refused is skipped: the request reaches the backend without it', async () => {
    const s = await startWith(
      filterWith((ctx) => {
        ctx.setUpstreamHeader('x-good', 'kept')
        ctx.setUpstreamHeader('x-bad', 'a\nb')
      }),
      backend,
      'open',
    )
    try {
      const res = await request(`${s.url}/x`)
      expect(res.statusCode).toBe(200)
      const echo = (await res.body.json()) as Echo
      expect(echo.headers['x-bad']).toBeUndefined()
      expect(await s.filterErrors('edits')).toBe(1)
    } finally {
      await s.close()
    }
  })

  it('a response Content-Length from a filter is refused: the body arrives whole and the keep-alive connection stays in step', async () => {
    const s = await startWith(filterWith((ctx) => ctx.addResponseHeader('Content-Length', '3')), backend, 'open')
    const agent = new Agent({ connections: 1 })
    try {
      for (let i = 0; i < 2; i++) {
        const res = await request(`${s.url}/path-${i}`, { dispatcher: agent, headersTimeout: 5000, bodyTimeout: 5000 })
        const text = await res.body.text()
        expect(res.statusCode).toBe(200)
        expect(res.headers['content-length']).toBe(String(Buffer.byteLength(text)))
        expect((JSON.parse(text) as { url: string }).url).toBe(`/path-${i}`)
      }
      expect(await s.filterErrors('edits')).toBe(2)
    } finally {
      await agent.close()
      await s.close()
    }
  })

  it.each([
    ['Transfer-Encoding', 'chunked'],
    ['Connection', 'upgrade'],
    ['Keep-Alive', 'timeout=1'],
    ['Proxy-Authenticate', 'Basic'],
    ['X-Split', 'a\r\nset-cookie: injected=1'],
  ])('addResponseHeader(%j) is refused (the filter fails open): a well-formed response without it', async (name, value) => {
    const s = await startWith(filterWith((ctx) => ctx.addResponseHeader(name, value)), backend, 'open')
    try {
      const res = await request(`${s.url}/x`, { headersTimeout: 5000, bodyTimeout: 5000 })
      const echo = (await res.body.json()) as Echo
      expect(res.statusCode).toBe(200)
      expect(echo.rawHeaders).toContain('x-request-id')
      const lower = name.toLowerCase()
      // (node:http writes its own Connection/Keep-Alive; the filter's value must not be among them)
      if (lower !== 'transfer-encoding') expect(res.headers[lower]).not.toBe(value)
      expect(res.headers['set-cookie']).toBeUndefined()
      expect(await s.filterErrors('edits')).toBe(1)
    } finally {
      await s.close()
    }
  })

  it('names are case-insensitive: the last value wins, the client and the backend see one header', async () => {
    const s = await startWith(
      filterWith((ctx) => {
        ctx.addResponseHeader('X-Seen', 'first')
        ctx.addResponseHeader('x-seen', 'second')
        ctx.setUpstreamHeader('X-Tenant-Id', 'acme')
        ctx.setUpstreamHeader('x-drop', null)
        ctx.setUpstreamHeader('Host', null) // a removal of a proxy-owned header is a no-op, not an error
      }),
      backend,
      'closed',
    )
    try {
      const res = await request(`${s.url}/x`, { headers: { 'x-tenant-id': 'spoofed', 'X-Drop': 'gone' } })
      const echo = (await res.body.json()) as Echo
      expect(res.statusCode).toBe(200)
      expect(res.headers['x-seen']).toBe('second')
      expect(echo.headers['x-tenant-id']).toBe('acme')
      expect(echo.rawHeaders.filter((h) => h.toLowerCase() === 'x-tenant-id')).toHaveLength(1)
      expect(echo.headers['x-drop']).toBeUndefined()
      expect(echo.headers.host).toBe(new URL(s.url).host)
      expect(await s.filterErrors('edits')).toBe(0)
    } finally {
      await s.close()
    }
  })
})
