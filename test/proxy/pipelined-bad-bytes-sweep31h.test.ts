// Pipelined requests followed by bytes node:http's parser refuses: the 400 for the bad bytes was
// written at once, ahead of the responses to the requests parsed before them, and the connection
// closed under those — the client read the 400 as its first request's answer and the rest were
// lost (logged as client aborts). And bytes after a request that said Connection: close, which
// are no request at all (RFC 9112 §9.6), got a 400 written ahead of that request's answer.
// Real proxy (supervisor + worker), real node:http backend, a raw TCP client.
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let p: TestProxy
beforeAll(async () => {
  // Each answer 150 ms late, so the bad bytes are parsed while the good requests are in flight.
  backend = await startRawBackend((req, res) => {
    req.resume()
    setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end(`answer ${req.url}`), 150)
  })
  p = await startTestProxy({ routes: [{ name: 'pipe31h', upstream: backend.url, type: 'http' }] })
})
afterAll(async () => {
  await p?.close()
  await backend?.close()
})

/** Sends `raw` in one write and reads until the proxy closes the connection. */
async function exchange(raw: string): Promise<string> {
  const url = new URL(p.url)
  const socket = connect(Number(url.port), url.hostname)
  socket.setEncoding('latin1')
  let got = ''
  socket.on('data', (d: string) => (got += d))
  await new Promise<void>((resolve, reject) => {
    socket.on('close', () => resolve())
    socket.on('error', reject)
    socket.setTimeout(10_000, () => reject(new Error(`no close; got so far: ${JSON.stringify(got)}`)))
    socket.write(raw)
  })
  return got
}

const statusLines = (text: string) => text.split('\r\n').filter((l) => l.startsWith('HTTP/1.1 '))

describe('pipelined requests before bytes the parser refuses (sweep 31h)', () => {
  it('answers the requests parsed first, in order, then the 400, then closes', async () => {
    const before = metricSum(await p.metricsText(), 'igw_requests_total', 'route="pipe31h",status="200"')
    const got = await exchange('GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n')
    expect(statusLines(got).map((l) => l.slice(9, 12))).toEqual(['200', '200', '400'])
    expect(got.indexOf('answer /one')).toBeGreaterThan(-1)
    expect(got.indexOf('answer /one')).toBeLessThan(got.indexOf('answer /two'))
    expect(got.indexOf('answer /two')).toBeLessThan(got.indexOf('"BAD_REQUEST"'))
    // Both counted as answered, not as client aborts.
    await expect.poll(async () => metricSum(await p.metricsText(), 'igw_requests_total', 'route="pipe31h",status="200"') - before, { timeout: 10_000 }).toBe(2)
    expect(metricSum(await p.metricsText(), 'igw_requests_total', 'route="pipe31h",status="499"')).toBe(0)
  })

  it('bytes after a request that said Connection: close get no 400: that request is answered, the connection closed', async () => {
    const got = await exchange('GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n')
    expect(statusLines(got).map((l) => l.slice(9, 12))).toEqual(['200'])
    expect(got).toContain('answer /last')
    expect(got).not.toContain('BAD_REQUEST')
  })

  it('(guard) bad bytes with nothing in flight are answered 400 at once', async () => {
    const got = await exchange('NOT HTTP AT ALL\r\n\r\n')
    expect(statusLines(got).map((l) => l.slice(9, 12))).toEqual(['400'])
    expect(got).toContain('"BAD_REQUEST"')
  })
})
