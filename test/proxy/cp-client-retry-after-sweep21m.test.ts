// The proxy's config stream against a control plane that sheds load, sweep 21m: a 503 (or 429)
// with Retry-After was retried on the client's own backoff (250 ms, at most 5 s), so a fleet of
// proxies hammered the control plane that asked them to wait. Retry-After (seconds or an
// HTTP-date) is honoured now, capped at a minute. A real HTTP server answers the stream.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ControlPlaneClient, ReconnectPolicy, RETRY_AFTER_CAP_MS, retryAfterMs } from '../../proxy/control-plane-client.ts'

describe('Retry-After on the config stream', () => {
  it('a 503 with Retry-After: 2 is not retried before 2 s', async () => {
    const streams: number[] = []
    const server = createServer((req, res) => {
      if (req.url?.startsWith('/v1/stream')) streams.push(performance.now())
      res.writeHead(503, { 'retry-after': '2', 'content-type': 'text/plain' }).end('overloaded')
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const stateDir = mkdtempSync(join(tmpdir(), 'igw-cp21m-'))
    const c = new ControlPlaneClient({
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      token: 't',
      stateDir,
      proxyId: 'shed-1',
      publicKeyPem: generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      toConfig: (doc) => doc as never,
      usageIntervalMs: 3_600_000,
      bootTimeoutMs: 4_000,
      log: () => undefined,
    })
    try {
      expect(await c.bootstrap()).toBeUndefined() // refused at once, no last-known-good
      await expect.poll(() => streams.length, { timeout: 4_000, interval: 20 }).toBeGreaterThanOrEqual(2)
      // old code: the second attempt came 125–250 ms after the first
      expect(streams[1]! - streams[0]!).toBeGreaterThanOrEqual(1_950)
    } finally {
      await c.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
      rmSync(stateDir, { recursive: true, force: true })
    }
  })

  it('reads delay-seconds and HTTP-dates, caps both, ignores what is absent, past or unreadable', () => {
    const now = Date.parse('2026-01-01T00:00:00Z')
    expect(retryAfterMs('7', now)).toBe(7_000)
    expect(retryAfterMs(' 30 ', now)).toBe(30_000)
    expect(retryAfterMs('Thu, 01 Jan 2026 00:00:20 GMT', now)).toBe(20_000)
    expect(retryAfterMs('86400', now)).toBe(RETRY_AFTER_CAP_MS)
    expect(retryAfterMs('Fri, 02 Jan 2026 00:00:00 GMT', now)).toBe(RETRY_AFTER_CAP_MS)
    for (const v of [undefined, '', '0', '-5', '1.5', 'soon', 'Wed, 31 Dec 2025 23:59:00 GMT']) expect(retryAfterMs(v, now)).toBe(0)
    expect(retryAfterMs(['3', '9'], now)).toBe(3_000)
  })

  it('the backoff waits at least the Retry-After, spread over a tenth more of it; a longer own backoff stays', () => {
    const low = new ReconnectPolicy(undefined, () => 0)
    expect(low.failed(10_000)).toBe(10_000)
    const high = new ReconnectPolicy(undefined, () => 1)
    expect(high.failed(10_000)).toBe(11_000)
    const own = new ReconnectPolicy({ baseMs: 4_000 }, () => 1)
    expect(own.failed(1_000)).toBe(4_000)
  })
})
