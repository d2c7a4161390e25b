// routes[].timeouts.headersMs is how long the upstream may take to answer, so it counts from when
// the request is in: a streamed upload still on its way (a large file on a slow link) was cut at
// headersMs after dispatch with a 504 UPSTREAM_TIMEOUT blaming a healthy upstream. Through a real
// igw proxy, a node:http backend that reads the whole body before answering, and undici.
import { Readable } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend } from '../helpers/backends.ts'
import { startTestProxy } from '../helpers/proxy.ts'

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

/** A body that arrives in `n` chunks `gapMs` apart (the client's link is slow). */
function slowBody(n: number, gapMs: number): Readable {
  let sent = 0
  return new Readable({
    read() {
      if (sent === n) {
        this.push(null)
        return
      }
      sent++
      setTimeout(() => this.push(Buffer.alloc(1024, 97)), gapMs)
    },
  })
}

describe('a slow streamed upload on an http route', () => {
  it('is not cut by headersMs while the client is still sending; headersMs applies once the body is in', async () => {
    const backend = await startRawBackend((req, res) => {
      let size = 0
      req.on('data', (c: Buffer) => (size += c.length))
      req.on('end', () => {
        if (req.url === '/hang') return // reads the whole body, then never answers
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ size }))
      })
    })
    cleanups.push(backend.close)
    const proxy = await startTestProxy({
      routes: [{ name: 'upload', upstream: backend.url, type: 'http', timeouts: { headersMs: 600, totalMs: 0 } }],
    })
    cleanups.push(() => proxy.close())

    // 8 chunks 300 ms apart: the upload takes ~2.4 s, four times headersMs.
    for (const headers of [{ 'content-length': String(8 * 1024) }, {}]) {
      const r = await request(`${proxy.url}/files`, { method: 'PUT', headers, body: slowBody(8, 300), headersTimeout: 30_000, bodyTimeout: 30_000 })
      const text = await r.body.text()
      expect(r.statusCode, text).toBe(200)
      expect(JSON.parse(text)).toEqual({ size: 8 * 1024 })
    }

    // The control: an upstream that has the whole body and does not answer still gets its 504.
    const hung = await request(`${proxy.url}/hang`, { method: 'PUT', headers: { 'content-length': String(2 * 1024) }, body: slowBody(2, 100), headersTimeout: 30_000, bodyTimeout: 30_000 })
    const body = (await hung.body.json()) as { errors: { extensions: { code: string } }[] }
    expect(hung.statusCode).toBe(504)
    expect(body.errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
  }, 60_000)

  it('the total timeout still bounds an upload that never ends', async () => {
    const backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => res.end('late'))
    })
    cleanups.push(backend.close)
    const proxy = await startTestProxy({
      routes: [{ name: 'upload', upstream: backend.url, type: 'http', timeouts: { headersMs: 300, totalMs: 1500 } }],
    })
    cleanups.push(() => proxy.close())
    // 100 chunks 200 ms apart: far longer than totalMs.
    const r = await request(`${proxy.url}/files`, { method: 'PUT', headers: { 'content-length': String(100 * 1024) }, body: slowBody(100, 200), headersTimeout: 30_000, bodyTimeout: 30_000 }).catch((e: Error) => e)
    if (r instanceof Error) throw r
    const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(r.statusCode).toBe(504)
    expect(body.errors[0]!.extensions.code).toBe('UPSTREAM_TIMEOUT')
    expect(body.errors[0]!.message).toContain('total timeout')
  }, 60_000)
})
