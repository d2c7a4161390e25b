// shutdown.delayMs: after SIGTERM (close()), /readyz fails at once while the proxy goes on serving
// new connections as usual; only after the delay does the drain close the listener. Without it a
// load balancer polling /readyz kept sending until its next check and met refused connections.
import { Client, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
beforeAll(async () => {
  backend = await startRawBackend((_req, res) => res.end('{"ok":true}'))
})
afterAll(async () => {
  await backend?.close()
})

describe('shutdown.delayMs', () => {
  it('readiness fails at once, new connections are served during the delay, then the drain stops the listener', async () => {
    const proxy = await startTestProxy({ shutdown: { delayMs: 1_500, drainTimeoutMs: 1_000 }, routes: [{ name: 'api', upstream: backend.url, type: 'http' }] })
    const t0 = Date.now()
    const closed = proxy.close()
    const ready = await request(`${proxy.adminUrl}/readyz`, { reset: true })
    expect(ready.statusCode).toBe(503)
    expect(((await ready.body.json()) as { draining: boolean }).draining).toBe(true)
    // A new connection during the delay is served as usual, keep-alive kept (not yet draining).
    const client = new Client(proxy.url)
    const res = await client.request({ path: '/x', method: 'GET' })
    expect(res.statusCode).toBe(200)
    expect(res.headers.connection).not.toBe('close')
    await res.body.dump()
    await client.close()
    expect(Date.now() - t0).toBeLessThan(1_500)
    await closed
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_500)
    await expect(request(`${proxy.url}/x`, { reset: true })).rejects.toThrow()
  })

  it('defaults to 0: the drain starts at once', async () => {
    const proxy = await startTestProxy({ routes: [{ name: 'api', upstream: backend.url, type: 'http' }] })
    expect(proxy.config().shutdown.delayMs).toBe(0)
    const t0 = Date.now()
    await proxy.close()
    expect(Date.now() - t0).toBeLessThan(1_500)
  })
})
