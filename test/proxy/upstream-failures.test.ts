import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

async function errorOf(res: Awaited<ReturnType<typeof request>>): Promise<GqlError['errors'][0]> {
  return ((await res.body.json()) as GqlError).errors[0]!
}

/** Listen on loopback `port`; a listen error (EADDRINUSE) rejects: unhandled, the test hung. */
function listenOn(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
}

/**
 * A free loopback port outside the kernel's ephemeral range, for a test that leaves it closed a
 * while and listens on it again: a port from listen(0) could be drawn meanwhile by another test
 * worker's listen(0) or outgoing connection, which never draw from outside that range.
 */
async function freePortOutsideEphemeral(): Promise<number> {
  let [lo, hi] = [32768, 60999]
  try {
    ;[lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number) as [number, number]
  } catch {} // not Linux: the usual range
  const below = Math.max(0, lo - 1024) // 1024..lo-1
  const above = Math.max(0, 65535 - hi) // hi+1..65535
  for (let i = 0; i < 50; i++) {
    const k = Math.floor(Math.random() * (below + above))
    const port = k < below ? 1024 + k : hi + 1 + (k - below)
    const probe = createServer()
    try {
      await listenOn(probe, port)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue // a service's port: another one
      throw err
    }
    await new Promise<void>((r) => probe.close(() => r()))
    return port
  }
  throw new Error(`no free port outside the ephemeral range ${lo}-${hi} in 50 tries`)
}

describe('upstream failures become precise errors, never crashes', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let upstreamClosed: string[] = []
  let upstreamArrived: string[] = []

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      upstreamArrived.push(req.url ?? '')
      req.on('close', () => upstreamClosed.push(req.url ?? ''))
      switch (req.url) {
        case '/no-headers':
          return // never answers
        case '/slow-total':
          res.writeHead(200, { 'content-type': 'text/plain' })
          res.write('a')
          // keeps trickling, so the idle timeout never fires but the total one does
          {
            const t = setInterval(() => res.write('b'), 50)
            res.on('close', () => clearInterval(t))
          }
          return
        case '/stall-body':
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' })
          res.write('partial')
          return // body never completes
        case '/reset-mid-body':
          res.writeHead(200, { 'content-type': 'application/x-ndjson' })
          res.write('{"n":1}\n')
          setTimeout(() => res.socket?.destroy(), 30)
          return
        case '/reset-before-headers':
          req.socket.destroy()
          return
        case '/long':
          res.writeHead(200, { 'content-type': 'text/plain' })
          {
            const t = setInterval(() => res.write('x'.repeat(1024)), 10)
            res.on('close', () => clearInterval(t))
          }
          return
        default:
          res.writeHead(200, { 'content-type': 'text/plain' })
          res.end('ok')
      }
    })
    proxy = await startTestProxy({
      routes: [
        { name: 'short', match: { pathPrefix: '/no-headers' }, upstream: backend.url, type: 'http', timeouts: { headersMs: 200, bodyIdleMs: 5_000, totalMs: 5_000 } },
        // totalMs leaves room for the head: at 300 ms a loaded box answered 504 before it came.
        { name: 'total', match: { pathPrefix: '/slow-total' }, upstream: backend.url, type: 'http', timeouts: { headersMs: 5_000, bodyIdleMs: 5_000, totalMs: 2_000 } },
        { name: 'idle', match: { pathPrefix: '/stall-body' }, upstream: backend.url, type: 'http', timeouts: { headersMs: 1_000, bodyIdleMs: 200, totalMs: 5_000 } },
        { name: 'rest', upstream: backend.url, type: 'http', timeouts: { totalMs: 0 } },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })
  afterEach(() => {
    upstreamClosed = []
    upstreamArrived = []
  })

  it('no response headers within headersMs → 504 UPSTREAM_TIMEOUT', async () => {
    const t0 = Date.now()
    const res = await request(`${proxy.url}/no-headers`)
    expect(res.statusCode).toBe(504)
    const err = await errorOf(res)
    expect(err.extensions.code).toBe('UPSTREAM_TIMEOUT')
    expect(err.message).toMatch(/200 ms/)
    expect(Date.now() - t0).toBeLessThan(2_000)
  })

  it('total timeout after headers were sent cuts the response (no fake success)', async () => {
    const res = await request(`${proxy.url}/slow-total`)
    expect(res.statusCode).toBe(200)
    await expect(res.body.text()).rejects.toThrow()
    expect(await proxy.metricsText()).toMatch(/igw_proxy_errors_total\{route="total",code="UPSTREAM_TIMEOUT"\} 1/)
  })

  it('body idle timeout cuts a stalled body', async () => {
    const res = await request(`${proxy.url}/stall-body`)
    expect(res.statusCode).toBe(200)
    await expect(res.body.text()).rejects.toThrow()
  })

  it('upstream reset before headers → 502 UPSTREAM_UNAVAILABLE', async () => {
    const res = await request(`${proxy.url}/reset-before-headers`)
    expect(res.statusCode).toBe(502)
    expect((await errorOf(res)).extensions.code).toBe('UPSTREAM_UNAVAILABLE')
  })

  it('upstream abort mid-body ends the client response (truncated, not hung) and the proxy keeps serving', async () => {
    const res = await request(`${proxy.url}/reset-mid-body`)
    expect(res.statusCode).toBe(200)
    await expect(res.body.text()).rejects.toThrow()
    const after = await request(`${proxy.url}/fine`)
    expect(await after.body.text()).toBe('ok')
  })

  it('client abort cancels the upstream request', async () => {
    const ac = new AbortController()
    const res = await request(`${proxy.url}/long`, { signal: ac.signal })
    expect(res.statusCode).toBe(200)
    res.body.on('error', () => undefined)
    res.body.resume()
    await new Promise((r) => setTimeout(r, 50))
    ac.abort()
    const t0 = Date.now()
    while (!upstreamClosed.includes('/long') && Date.now() - t0 < 2_000) await new Promise((r) => setTimeout(r, 10))
    expect(upstreamClosed).toContain('/long')
    await new Promise((r) => setTimeout(r, 50))
    expect(await proxy.metricsText()).toMatch(/igw_client_aborts_total\{route="rest"\} [1-9]/)
  })

  it('a client that leaves before the response head is counted 499, not as a 200 it never got', async () => {
    const ac = new AbortController()
    const pending = request(`${proxy.url}/no-headers`, { signal: ac.signal })
    await expect.poll(() => upstreamArrived.includes('/no-headers'), { timeout: 2_000 }).toBe(true) // dispatched, no head yet
    ac.abort()
    await expect(pending).rejects.toThrow()
    await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_requests_total', 'route="short",status="499"'), { timeout: 2_000 }).toBe(1)
    expect(metricSum(await proxy.metricsText(), 'igw_requests_total', 'route="short",status="200"')).toBe(0)
    expect(metricSum(await proxy.metricsText(), 'igw_client_aborts_total', 'route="short"')).toBe(1)
  })

  it('dead upstream (connection refused) → 502, then recovers when it comes back', async () => {
    const port = await freePortOutsideEphemeral()
    const dead = await startTestProxy({ routes: [{ name: 'dead', upstream: `http://127.0.0.1:${port}`, type: 'http' }] })
    try {
      const res = await request(`${dead.url}/x`)
      expect(res.statusCode).toBe(502)
      const err = await errorOf(res)
      expect(err.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
      expect(err.message).toMatch(/ECONNREFUSED/)
      const ready = await request(`${dead.adminUrl}/readyz`)
      expect(ready.statusCode).toBe(503)
      await ready.body.dump()
      const revived = createServer((s) => s.resume().end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nup'))
      await listenOn(revived, port)
      try {
        const again = await request(`${dead.url}/x`)
        expect(again.statusCode).toBe(200)
        expect(await again.body.text()).toBe('up')
      } finally {
        await new Promise<void>((r) => revived.close(() => r()))
      }
    } finally {
      await dead.close()
    }
  })

  it('connect timeout → 504 (listener whose accept queue is full)', async () => {
    // A listener with backlog 0 that never accepts: after one queued connection the kernel
    // drops further SYNs, so connecting hangs exactly as to a black-holed host.
    const py: ChildProcess = spawn('python3', ['-c', "import socket,sys\ns=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(0); print(s.getsockname()[1], flush=True); sys.stdin.read()"], {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    const [chunk] = (await once(py.stdout!, 'data')) as [Buffer]
    const port = Number(chunk.toString().trim())
    const fillers: Socket[] = []
    const { connect } = await import('node:net')
    for (let i = 0; i < 2; i++) fillers.push(connect(port, '127.0.0.1').on('error', () => undefined))
    await new Promise((r) => setTimeout(r, 100))
    const p = await startTestProxy({
      upstreams: { blackhole: { url: `http://127.0.0.1:${port}`, connectTimeoutMs: 300, healthCheck: { enabled: false } } },
      routes: [{ name: 'bh', upstream: 'blackhole', type: 'http' }],
    })
    try {
      const t0 = Date.now()
      const res = await request(`${p.url}/x`)
      expect(res.statusCode).toBe(504)
      const err = await errorOf(res)
      expect(err.extensions.code).toBe('UPSTREAM_TIMEOUT')
      expect(err.message).toMatch(/connect/)
      expect(Date.now() - t0).toBeLessThan(3_000)
    } finally {
      await p.close()
      for (const s of fillers) s.destroy()
      py.kill()
    }
  })
})
