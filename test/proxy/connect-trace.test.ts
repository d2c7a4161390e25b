// CONNECT and TRACE are refused with a GraphQL-shaped 405, counted and logged. CONNECT had no
// listener, so Node dropped the socket without a reply, a log line or a count; TRACE was relayed
// to http routes' backends (cross-site tracing echoes cookies and credentials back).
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('CONNECT and TRACE', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'message/http' })
      res.end(`${req.method} ${req.url}\r\ncookie: ${req.headers.cookie ?? ''}`)
    })
    proxy = await startTestProxy({ routes: [{ name: 'rest', upstream: backend.url, type: 'http' }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('CONNECT gets a 405 with the GraphQL error shape and is counted, and the proxy keeps serving', async () => {
    const reply = (await rawExchange(proxy.port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 5_000)).toString('latin1')
    expect(reply).toMatch(/^HTTP\/1\.1 405 Method Not Allowed\r\n/)
    expect(reply.toLowerCase()).toContain('\r\nallow: get, head, post, put, patch, delete, options\r\n') // RFC 9110 §15.5.6
    const body = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)) as { errors: { extensions: { code: string } }[] }
    expect(body.errors[0]!.extensions.code).toBe('METHOD_NOT_ALLOWED')
    await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_requests_total', 'status="405"'), { timeout: 10_000 }).toBeGreaterThanOrEqual(1)
    const ok = await request(`${proxy.url}/after`)
    expect(ok.statusCode).toBe(200)
    await ok.body.text()
  })

  it('a CONNECT client that never closes its side does not hold the socket: it is cut after the linger', async () => {
    const s = connect({ port: proxy.port, host: '127.0.0.1', allowHalfOpen: true })
    let got = ''
    let failed: string | undefined
    s.on('data', (d: Buffer) => (got += d.toString('latin1')))
    s.on('error', (e: NodeJS.ErrnoException) => (failed = e.code ?? e.message))
    await new Promise<void>((r) => s.once('connect', () => r()))
    s.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n')
    await expect.poll(() => got, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 405/)
    await new Promise((r) => setTimeout(r, 3_600)) // past the gateway's 3 s linger
    // A socket the gateway closed answers a write with a reset, and the next write fails.
    await expect
      .poll(
        () => {
          if (failed === undefined && !s.destroyed) s.write('still here?')
          return failed ?? (s.destroyed ? 'closed' : undefined)
        },
        { timeout: 5_000, interval: 300 },
      )
      .toBeDefined()
    s.destroy()
  })

  it('TRACE is refused before any route or backend sees it', async () => {
    const before = backend.requests.length
    const res = await request(`${proxy.url}/x`, { method: 'TRACE', headers: { cookie: 'session=secret' } })
    expect(res.statusCode).toBe(405)
    expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS')
    const text = await res.body.text()
    expect(text).toContain('METHOD_NOT_ALLOWED')
    expect(text).not.toContain('secret')
    expect(backend.requests.length).toBe(before)
  })
})
