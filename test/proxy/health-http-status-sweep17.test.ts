// An HTTP health check (`healthCheck.path`) reads 4xx as unhealthy, as a Kubernetes httpGet probe
// does (200–399 healthy): a mistyped path (404) or a backend refusing the probe (401/403) was
// read as healthy, so /readyz, igw_upstream_healthy and the IgwUpstreamUnhealthy alert never saw
// a backend that answered nothing but errors. Real node:http backend, the real checker.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { UpstreamHealth } from '../../proxy/health.ts'

describe('HTTP health probe status', () => {
  let status = 200
  const server: Server = createServer((req, res) => {
    res.writeHead(req.url === '/healthz' ? status : 500, { 'content-type': 'text/plain' })
    res.end('x')
  })
  const checkers: UpstreamHealth[] = []
  beforeAll(() => new Promise<void>((r) => server.listen(0, '127.0.0.1', r)))
  afterAll(() => {
    for (const h of checkers) h.stop()
    server.close()
  })

  it('2xx and 3xx are healthy; 404, 401 and 5xx are not, and the error names the status', { timeout: 30_000 }, async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const config = validateConfig({ listen: '127.0.0.1:0', upstreams: { be: { url, healthCheck: { path: '/healthz', intervalMs: 100, timeoutMs: 1_000 } } }, routes: [{ name: 'r', upstream: 'be', type: 'http' }] } as never)
    const h = new UpstreamHealth(config, () => undefined)
    checkers.push(h)
    const healthy = () => h.states.get('be')?.healthy
    for (const [s, want] of [[200, true], [404, false], [204, true], [401, false], [302, true], [503, false]] as const) {
      status = s
      await expect.poll(healthy, { timeout: 10_000, message: `status ${s}` }).toBe(want)
      if (!want) expect(h.states.get('be')?.error).toContain(String(s))
    }
  })
})
