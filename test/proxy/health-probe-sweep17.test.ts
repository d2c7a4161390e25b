// The upstream TCP health probe against a backend that does not close its side when the probe
// closes its own (a server that keeps half-open connections): each probe must release its socket.
// Real TCP server, the real UpstreamHealth checker.
import { readdirSync } from 'node:fs'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { UpstreamHealth } from '../../proxy/health.ts'

const openFds = (): number => readdirSync('/proc/self/fd').length

describe('TCP health probe', () => {
  const conns = new Set<Socket>()
  const server = createServer({ allowHalfOpen: true }, (s) => {
    conns.add(s)
    s.on('error', () => undefined)
    s.on('close', () => conns.delete(s))
  })
  let health: UpstreamHealth | undefined

  beforeAll(() => new Promise<void>((r) => server.listen(0, '127.0.0.1', r)))
  afterAll(() => {
    health?.stop()
    for (const s of conns) s.destroy()
    server.close()
  })

  it('a backend that never closes its side does not leave one socket per probe open in the proxy', { timeout: 60_000 }, async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const config = validateConfig({ listen: '127.0.0.1:0', upstreams: { be: { url, healthCheck: { intervalMs: 100, timeoutMs: 1_000 } } }, routes: [{ name: 'r', upstream: 'be', type: 'http' }] } as never)
    const before = openFds()
    health = new UpstreamHealth(config, () => undefined)
    // each probe is one connection the backend keeps (half-open, on its side)
    await expect.poll(() => conns.size, { timeout: 30_000 }).toBeGreaterThanOrEqual(15)
    health.stop()
    const kept = conns.size
    expect(health.states.get('be')?.healthy).toBe(true)
    // The backend's own half-open sockets are fds of this process too: one per probe. The
    // probe's side must be gone (it stayed open, FIN_WAIT2, for as long as the backend did).
    await expect.poll(() => openFds() - before, { timeout: 10_000 }).toBeLessThanOrEqual(kept + 4)
  })
})
