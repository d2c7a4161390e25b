// An HTTP health check's path is sent to the upstream as written. Resolved against the upstream's
// URL, a path starting with "//" is a network-path reference: "//healthz" probed host "healthz",
// and "//127.0.0.1:1/live" probed another address entirely, whose answer then decided this
// upstream's health (/readyz, igw_upstream_healthy). Real node:http backend, the real checker.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { UpstreamHealth } from '../../proxy/health.ts'

describe('HTTP health probe path (sweep 20k)', () => {
  const seen: string[] = []
  const server: Server = createServer((req, res) => {
    seen.push(req.url ?? '')
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
  const checkers: UpstreamHealth[] = []
  beforeAll(() => new Promise<void>((r) => server.listen(0, '127.0.0.1', r)))
  afterAll(async () => {
    for (const h of checkers) h.stop()
    server.closeAllConnections()
    await new Promise((r) => server.close(r))
  })

  it('a path starting with "//" is probed on the upstream itself, not on the host it seems to name', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    // Port 1 on loopback refuses: the old probe went there and found the upstream unhealthy.
    const path = '//127.0.0.1:1/live?full=1'
    const config = validateConfig({ listen: '127.0.0.1:0', upstreams: { be: { url, healthCheck: { path, intervalMs: 100, timeoutMs: 1_000 } } }, routes: [{ name: 'r', upstream: 'be', type: 'http' }] } as never)
    const h = new UpstreamHealth(config, () => undefined)
    checkers.push(h)
    await expect.poll(() => h.states.get('be')?.checked, { timeout: 5_000 }).toBe(true)
    expect(h.states.get('be')).toMatchObject({ healthy: true, error: undefined })
    expect(seen).toContain(path)
  })
})
