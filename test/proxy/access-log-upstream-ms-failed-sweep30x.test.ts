// upstreamMs on a failed exchange (sweep 30x): it was set only when the upstream's headers
// arrived, so a 504 (no headers in time) or a 502 (the upstream reset) had none — the line did
// not say how long the upstream was waited on before the gateway gave up on it.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const HEADERS_MS = 250
const RESET_AFTER_MS = 200

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((req) => {
    if (req.url === '/reset') setTimeout(() => req.socket.resetAndDestroy(), RESET_AFTER_MS)
    // /slow: never answered (the proxy's headers timeout ends it; close() cuts the socket)
  })
  proxy = await startTestProxy({ routes: [{ name: 'r', upstream: backend.url, type: 'http', timeouts: { headersMs: HEADERS_MS } }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

it('names how long the upstream was waited on for a 504 and a 502', async () => {
  // POST: not retried after a reset, so the wait is one attempt's.
  const cases = [
    { path: '/slow', status: 504, code: 'UPSTREAM_TIMEOUT', waited: HEADERS_MS },
    { path: '/reset', status: 502, code: 'UPSTREAM_UNAVAILABLE', waited: RESET_AFTER_MS },
  ]
  for (const c of cases) {
    const res = await fetch(`${proxy.url}${c.path}`, { method: 'POST', body: 'x' })
    await res.arrayBuffer()
    expect(res.status).toBe(c.status)
    const id = res.headers.get('x-request-id')
    await expect.poll(() => proxy.logs.find('access').find((l) => l.reqId === id), { timeout: 3_000 }).toMatchObject({ status: c.status, code: c.code })
    const line = proxy.logs.find('access').find((l) => l.reqId === id)!
    expect(typeof line.upstreamMs).toBe('number')
    // At least the wait (timers may fire up to 1 ms early against performance.now), within the whole request.
    expect(line.upstreamMs as number).toBeGreaterThanOrEqual(c.waited - 5)
    expect(line.upstreamMs as number).toBeLessThanOrEqual(line.durMs as number)
  }
})
