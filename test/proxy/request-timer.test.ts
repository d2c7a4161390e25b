// One timer per request: the GraphQL body's timer is armed for the upstream's headers timeout as
// well when that is sooner, kept by forward(), and re-armed when it fires early. These pin what
// each deadline still means, and the Content-Length fast path that ends a relayed response with
// its last chunk.
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

/** Send a head, then the body `bodyAfterMs` later (or never); resolves with the raw reply. */
function slowBody(port: number, path: string, body: string, bodyAfterMs: number | undefined): Promise<{ raw: string; ms: number }> {
  const t0 = Date.now()
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write(`POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`)
      if (bodyAfterMs !== undefined) setTimeout(() => s.write(body), bodyAfterMs)
    })
    let out = ''
    s.on('data', (d) => (out += d.toString('latin1')))
    s.on('end', () => resolve({ raw: out, ms: Date.now() - t0 }))
    s.on('error', reject)
    setTimeout(() => reject(new Error(`no answer; got ${JSON.stringify(out)}`)), 8_000).unref()
  })
}

const bodyOf = (raw: string) => raw.slice(raw.indexOf('\r\n\r\n') + 4)

describe('request timers', () => {
  let backend: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        const u = new URL(req.url!, 'http://x')
        const delay = Number(u.searchParams.get('delay') ?? 0)
        const size = Number(u.searchParams.get('size') ?? 12)
        setTimeout(() => {
          const body = Buffer.alloc(size, 'a')
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) })
          // A large body in several writes, so it reaches the proxy in several chunks.
          if (size > 65_536) {
            res.write(body.subarray(0, 1000))
            setTimeout(() => res.end(body.subarray(1000)), 20)
          } else res.end(body)
        }, delay)
      })
    })
    proxy = await startTestProxy({
      log: { level: 'warn' },
      routes: [
        { name: 'gql', upstream: backend.url, type: 'graphql', match: { pathPrefix: '/graphql' }, timeouts: { headersMs: 150, totalMs: 1_500, bodyIdleMs: 10_000 } },
        { name: 'http', upstream: backend.url, type: 'http', match: { pathPrefix: '/' } },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('a GraphQL body that arrives after headersMs (but within totalMs) is relayed, not refused', async () => {
    const { raw, ms } = await slowBody(proxy.port, '/graphql', '{"query":"{ a }"}', 400)
    expect(raw.startsWith('HTTP/1.1 200 '), raw).toBe(true)
    expect(bodyOf(raw)).toBe('aaaaaaaaaaaa')
    expect(ms).toBeGreaterThanOrEqual(390)
  })

  it('a body that never ends gets 408 at totalMs, not when the headers timeout would fall', async () => {
    const { raw, ms } = await slowBody(proxy.port, '/graphql', '{"query":"{ a }"}', undefined)
    expect(raw.startsWith('HTTP/1.1 408 '), raw).toBe(true)
    expect((JSON.parse(bodyOf(raw)) as GqlError).errors[0]!.extensions.code).toBe('REQUEST_TIMEOUT')
    expect(ms).toBeGreaterThanOrEqual(1_400)
  })

  it('the upstream headers timeout counts from dispatch, with the timer kept from the body read', async () => {
    // Body at once, backend slow: 504 near headersMs.
    const t0 = Date.now()
    const res = await request(`${proxy.url}/graphql?delay=700`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ a }"}' })
    const took = Date.now() - t0
    expect(res.statusCode).toBe(504)
    expect(((await res.body.json()) as GqlError).errors[0]!.message).toBe('upstream sent no response headers within 150 ms')
    expect(took).toBeGreaterThanOrEqual(140)
    // Short of totalMs (1.5 s), the other timer that answers 504, which cannot fire early; the
    // rest is room for a loaded machine (650 ms left it 500).
    expect(took).toBeLessThan(1_100)
    // Body late (after the first due time passed), backend slow: still headersMs after dispatch.
    const late = await slowBody(proxy.port, '/graphql?delay=700', '{"query":"{ a }"}', 300)
    expect(late.raw.startsWith('HTTP/1.1 504 '), late.raw).toBe(true)
    expect(late.ms).toBeGreaterThanOrEqual(300 + 140)
    expect(late.ms).toBeLessThan(300 + 1_100)
  })

  it('responses with a Content-Length end whole, in one chunk or several, and the connection is reused', async () => {
    const client = new Client(proxy.url, { pipelining: 1 })
    try {
      let sockets = 0
      client.on('connect', () => sockets++)
      for (const path of ['/graphql', '/data']) {
        for (const size of [1, 12, 16_384, 200_000, 1, 0]) {
          const res = await client.request({ path: `${path}?size=${size}`, method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ a }"}' })
          expect(res.statusCode).toBe(200)
          expect(res.headers['content-length']).toBe(String(size))
          const got = Buffer.from(await res.body.arrayBuffer())
          expect(got.length).toBe(size)
          expect(got.every((b) => b === 0x61)).toBe(true)
        }
      }
      expect(sockets).toBe(1) // every response ended where its length said
    } finally {
      await client.close()
    }
  })

  it('a HEAD answer with a Content-Length carries no body, and the next request on the connection is read', async () => {
    // Raw: undici's own client closes a connection after any HEAD.
    for (const head of ['HEAD /graphql?query=%7Ba%7D&size=5', 'HEAD /data?size=5']) {
      const raw = await new Promise<string>((resolve, reject) => {
        const s = connect(proxy.port, '127.0.0.1', () => s.write(`${head} HTTP/1.1\r\nHost: x\r\n\r\nGET /data?size=3 HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n`))
        let out = ''
        s.on('data', (d) => (out += d.toString('latin1')))
        s.on('end', () => resolve(out))
        s.on('error', reject)
        setTimeout(() => reject(new Error(`no answer; got ${JSON.stringify(out)}`)), 5_000).unref()
      })
      const [first, second] = raw.split(/(?=HTTP\/1\.1 )/)
      expect(first).toMatch(/^HTTP\/1\.1 200 [^]*content-length: 5\r\n[^]*\r\n\r\n$/i)
      expect(second).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\naaa$/)
    }
  })
})
