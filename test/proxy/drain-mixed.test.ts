// Graceful drain under mixed in-flight load, against a real igw process and real signals: what
// a client sees of a response written after SIGTERM, and what the logs say about what the drain
// deadline cut. Raw node:net clients, so every byte (headers, chunk terminator) is visible.
import { connect, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { spawnIgw, writeTempConfig } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

interface Raw {
  sock: Socket
  received: () => string
  closed: Promise<{ data: string; error: string | undefined }>
}

function rawRequest(port: number, request: string): Raw {
  const sock = connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  let error: string | undefined
  sock.on('data', (c: Buffer) => chunks.push(c))
  sock.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message))
  sock.once('connect', () => sock.write(request))
  const received = () => Buffer.concat(chunks).toString('latin1')
  const closed = new Promise<{ data: string; error: string | undefined }>((resolve) => sock.once('close', () => resolve({ data: received(), error })))
  // bounded: the proxy is gone long before this
  setTimeout(() => sock.destroy(), 15_000).unref()
  return { sock, received, closed }
}

const head = (raw: string) => raw.slice(0, raw.indexOf('\r\n\r\n')).toLowerCase()
const body = (raw: string) => raw.slice(raw.indexOf('\r\n\r\n') + 4)
const get = (path: string) => `GET ${path} HTTP/1.1\r\nhost: igw.test\r\n\r\n`

function accessLines(output: string[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = []
  for (const chunk of output) {
    for (const line of chunk.split('\n')) {
      try {
        const j = JSON.parse(line) as Record<string, unknown>
        if (j.msg === 'access') out.push(j)
      } catch {}
    }
  }
  return out
}

describe('graceful drain under mixed in-flight load (real igw process, real signals)', () => {
  let be: RawBackend
  let busy: RawBackend
  let gqlArrived = 0
  const busyArrived: string[] = []
  beforeAll(async () => {
    be = await startRawBackend((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x')
      if (url.pathname.startsWith('/b/gql')) {
        // a slow GraphQL backend: answers 1.5 s after the body arrived
        req.resume()
        req.on('end', () => {
          gqlArrived++
          setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { ok: url.pathname } })), 1_500)
        })
        return
      }
      if (url.pathname.startsWith('/b/dl')) {
        // a long download trickling 64 KiB every 40 ms (~1.6 MB/s)
        const total = Number(url.searchParams.get('mb')) * 1024 * 1024
        res.writeHead(200, url.searchParams.has('cl') ? { 'content-length': String(total) } : {})
        let sent = 0
        const t = setInterval(() => {
          const n = Math.min(64 * 1024, total - sent)
          res.write(Buffer.alloc(n, 97))
          sent += n
          if (sent >= total) {
            clearInterval(t)
            res.end()
          }
        }, 40)
        res.on('close', () => clearInterval(t))
        return
      }
      req.resume()
      res.end('ok')
    })
    busy = await startRawBackend((req, res) => {
      busyArrived.push(req.url ?? '')
      req.resume()
      const t = setTimeout(() => res.end(`done ${req.url}`), Number(new URL(req.url ?? '/', 'http://x').searchParams.get('ms') ?? 100))
      res.on('close', () => clearTimeout(t))
    })
  })
  afterAll(async () => {
    await be?.close()
    await busy?.close()
  })

  const config = (drainTimeoutMs: number, workers = 1) =>
    writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers,
      mode: 'ingress',
      log: { level: 'info' },
      shutdown: { drainTimeoutMs },
      // one connection to `busy`: a second request waits in undici's queue behind the first
      upstreams: { busy: { url: busy.url, connections: 1 } },
      routes: [
        { name: 'be', match: { pathPrefix: '/b/' }, upstream: be.url, type: 'http', filters: [] },
        { name: 'busy', match: { pathPrefix: '/busy' }, upstream: 'busy', type: 'http', filters: [] },
      ],
    })

  it('a response written after SIGTERM says Connection: close, so a keep-alive client does not send its next request onto a socket the drain closes', async () => {
    const igw = await spawnIgw(['proxy', '--config', config(5_000)])
    try {
      const post = (i: number) => `POST /b/gql${i} HTTP/1.1\r\nhost: igw.test\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`
      const before = gqlArrived
      const clients = Array.from({ length: 5 }, (_, i) => rawRequest(igw.port, post(i)))
      // In flight: all at the backend, which answers 1.5 s after each arrived, so after the
      // signal. A fixed 150 ms sleep raced a loaded machine both ways: a request not yet read
      // when the signal came, or (answers 500 ms after arriving) one answered before it.
      await waitUntil(() => gqlArrived - before === 5, 10_000, 'the five requests at the backend')
      igw.child.kill('SIGTERM')
      const results = await Promise.all(clients.map((c) => c.closed))
      for (const [i, r] of results.entries()) {
        expect(r.data.startsWith('HTTP/1.1 200 OK')).toBe(true)
        expect(body(r.data)).toContain(`/b/gql${i}`)
        expect(body(r.data).endsWith('0\r\n\r\n')).toBe(true) // the whole chunked body
        // Before: "connection: keep-alive", and the drain's idle sweep closed the socket a few
        // ms later; a client reusing it lost its next request.
        expect(head(r.data)).toContain('connection: close')
      }
      expect(await igw.exited).toBe(0)
    } finally {
      await igw.stop()
    }
  }, 60_000)

  it('a keep-alive client that sends its next request right after SIGTERM gets an answer with Connection: close, not a reset', async () => {
    const igw = await spawnIgw(['proxy', '--config', config(15_000, 2)])
    const clients = Array.from({ length: 20 }, () => new Client(igw.url, { keepAliveTimeout: 60_000 }))
    try {
      let connects = 0
      for (const c of clients) c.on('connect', () => connects++)
      for (const c of clients) expect((await (await c.request({ path: '/b/first', method: 'GET' })).body.text())).toBe('ok')
      const t0 = Date.now()
      igw.child.kill('SIGTERM')
      // Each on its idle kept-alive connection, as a client does that has not heard of the drain.
      const next = await Promise.all(
        clients.map(async (c) => {
          try {
            const r = await c.request({ path: '/b/next', method: 'GET', headersTimeout: 5_000, bodyTimeout: 5_000 })
            return `${r.statusCode} ${String(r.headers.connection)} ${await r.body.text()}`
          } catch (err) {
            return `error ${(err as { code?: string }).code ?? (err as Error).message}`
          }
        }),
      )
      // Before: every one failed (ECONNRESET or UND_ERR_SOCKET "other side closed"): the drain
      // closed idle connections at once, under requests already on their way.
      // (A request the worker read before the drain message reached it is answered keep-alive:
      // it came before the drain; the socket is then closed idle after the grace. Either way:
      // an answer, never a reset.)
      expect(next.filter((r) => !/^200 (close|keep-alive) ok$/.test(r))).toEqual([])
      expect(next.filter((r) => r === '200 close ok').length).toBeGreaterThan(0)
      expect(connects).toBe(20) // the same connections: none was reopened
      expect(await igw.exited).toBe(0)
      expect(Date.now() - t0).toBeLessThan(6_000) // idle connections hold the drain only ~1 s, not its 15 s deadline
    } finally {
      for (const c of clients) await c.destroy()
      await igw.stop()
    }
  }, 60_000)

  it('requests cut at the drain deadline each leave an aborted access line and are not blamed on the upstream; the cut download is visibly truncated', async () => {
    // The deadline leaves the 1 MiB download (~0.65 s of 40 ms timers) 4× its time on a loaded machine.
    const drainTimeoutMs = 3_000
    const igw = await spawnIgw(['proxy', '--config', config(drainTimeoutMs)])
    try {
      const chunked = rawRequest(igw.port, get('/b/dl?mb=8'))
      const sized = rawRequest(igw.port, get('/b/dl?mb=8&cl=1'))
      const first = rawRequest(igw.port, get('/busy/1?ms=20000')) // holds the one upstream connection
      await waitUntil(() => busyArrived.includes('/busy/1?ms=20000'), 10_000, 'the first at the busy backend')
      const queued = rawRequest(igw.port, get('/busy/2?ms=10')) // waits in undici's queue
      const finishes = rawRequest(igw.port, get('/b/dl?mb=1')) // ~0.65 s: done before the deadline
      // The downloads under way (their heads are out; the queued request came before the last)
      await waitUntil(() => [chunked, sized, finishes].every((r) => r.received().length > 0), 10_000, 'the downloads under way')
      const t0 = Date.now()
      igw.child.kill('SIGTERM')
      const code = await igw.exited
      const exitMs = Date.now() - t0
      expect(code).toBe(0)
      expect(exitMs).toBeLessThan(drainTimeoutMs + 3_500) // not the busy request's 20 s: cut at the deadline

      const done = await finishes.closed
      expect(body(done.data).endsWith('0\r\n\r\n')).toBe(true)
      expect(body(done.data).length).toBeGreaterThan(1024 * 1024)
      const c = await chunked.closed
      expect(c.data.startsWith('HTTP/1.1 200 OK')).toBe(true)
      expect(body(c.data).endsWith('0\r\n\r\n')).toBe(false) // no terminator: visibly cut
      const s = await sized.closed
      expect(body(s.data).length).toBeLessThan(8 * 1024 * 1024) // short of its content-length
      expect((await first.closed).data).toBe('')
      expect((await queued.closed).data).toBe('')

      // Before: the cut exchanges finished after the worker flushed its logs and ended, so they
      // had no access line, and the pools torn down under them logged "upstream failed".
      const access = accessLines(igw.output)
      const cut = access.filter((l) => l.aborted === true).map((l) => l.path).sort()
      expect(cut).toEqual(['/b/dl', '/b/dl', '/busy/1', '/busy/2'])
      expect(access.filter((l) => l.path === '/b/dl' && l.aborted === undefined)).toHaveLength(1)
      // The downloads went out as 200 (and were cut); the two that never got a head were not
      // successes: before, they were logged (and counted) with Node's default status 200.
      for (const path of ['/busy/1', '/busy/2']) expect(access.find((l) => l.path === path)).toMatchObject({ status: 503, code: 'OVERLOADED', aborted: true })
      expect(access.filter((l) => l.path === '/b/dl' && l.aborted === true).map((l) => l.status)).toEqual([200, 200])
      const text = igw.output.join('\n')
      expect(text).toContain('drain deadline reached; closing remaining connections')
      expect(text).not.toContain('upstream failed mid-response')
      expect(text).not.toContain('upstream request failed')
    } finally {
      await igw.stop()
    }
  }, 60_000)
})
