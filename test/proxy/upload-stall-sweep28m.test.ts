// routes[].timeouts.bodyIdleMs on an http route bounds a stalled upload too (as Envoy's stream
// idle timeout covers both directions): with `totalMs: 0` (exports, long streams) only totalMs ran
// during an upload, so a client that stopped mid-body held the exchange and its upstream
// connection for ever. Through a real igw proxy, node:http backends, raw TCP clients and undici.
import { connect, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, startRawTcpUpstream, type RawBackend, type RawTcpUpstream } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined)
})

/** A raw client that sends `head` and `first` body bytes, then stalls; collects what comes back. */
async function stalledUpload(port: number, head: string, first: string): Promise<{ socket: Socket; got: () => string; closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1')
  cleanups.push(() => socket.destroy())
  let got = ''
  socket.on('data', (c: Buffer) => (got += c.toString('latin1')))
  socket.on('error', () => undefined)
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  socket.write(head + first)
  return { socket, got: () => got, closed }
}

async function metrics(proxy: TestProxy): Promise<string> {
  return (await request(`${proxy.adminUrl}/metrics`)).body.text()
}

/** A body that arrives in `n` chunks `gapMs` apart. */
function slowBody(n: number, gapMs: number): Readable {
  let sent = 0
  return new Readable({
    read() {
      if (sent === n) return void this.push(null)
      sent++
      setTimeout(() => this.push(Buffer.alloc(512, 97)), gapMs)
    },
  })
}

// A backend that reads the body and answers with its size; `/early` answers a streaming head at
// once and beats every 100 ms until the body is in and 1.4 s more. One proxy: on route `h0`
// (headersMs 0) only the upload's idle timeout runs; on `h2` the headers timeout fires mid-upload
// first (and waits for the body), then the idle timeout.
let backend: RawBackend
let deaf: RawTcpUpstream
let proxy: TestProxy
let aborted = 0
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    let size = 0
    req.on('data', (c: Buffer) => (size += c.length))
    req.on('close', () => {
      if (!req.complete) aborted++
    })
    if (req.url!.endsWith('/early')) {
      res.writeHead(200, { 'content-type': 'text/plain' })
      let done = 0
      const beat = setInterval(() => {
        if (req.complete && ++done > 14) {
          clearInterval(beat)
          res.end(`size=${size}`)
        } else res.write('.')
      }, 100)
      res.on('close', () => clearInterval(beat))
      return
    }
    req.on('end', () => res.end(`size=${size}`))
  })
  // An upstream that takes the head, then reads nothing more and never answers.
  deaf = await startRawTcpUpstream((sock) => sock.pause())
  const timeouts = { totalMs: 0, bodyIdleMs: 600 }
  const maxBodyBytes = 1 << 28
  proxy = await startTestProxy({
    mode: 'ingress',
    routes: [
      { name: 'h0', match: { pathPrefix: '/h0/' }, upstream: backend.url, type: 'http', maxBodyBytes, timeouts: { ...timeouts, headersMs: 0 } },
      { name: 'deaf', match: { pathPrefix: '/deaf/' }, upstream: deaf.url, type: 'http', maxBodyBytes, timeouts: { ...timeouts, headersMs: 0 } },
      { name: 'h2', match: { pathPrefix: '/h2/' }, upstream: backend.url, type: 'http', maxBodyBytes, timeouts: { ...timeouts, headersMs: 400 } },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
  await deaf?.close()
})

describe('a stalled upload on an http route with totalMs: 0', () => {
  it('ends with 408 before the head (Content-Length and chunked), the upstream request aborted, counted and logged', async () => {
    const sized = await stalledUpload(proxy.port, 'PUT /h2/files HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n', 'a'.repeat(1000))
    const chunked = await stalledUpload(proxy.port, 'PUT /h0/files HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n', '3e8\r\n' + 'a'.repeat(1000) + '\r\n')
    for (const c of [sized, chunked]) {
      await expect.poll(c.got, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 408 [^]*\r\n\r\n[^]*REQUEST_TIMEOUT/)
      expect(c.got()).toMatch(/connection: close/i)
    }
    await expect.poll(() => aborted, { timeout: 5_000 }).toBe(2)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="REQUEST_TIMEOUT"'), { timeout: 5_000 }).toBe(2)
    const text = await metrics(proxy)
    expect(metricSum(text, 'igw_proxy_errors_total', 'route="h2",code="REQUEST_TIMEOUT"')).toBe(1)
    expect(metricSum(text, 'igw_client_aborts_total')).toBe(0)
    expect(proxy.logs.find('request body stalled').length).toBe(2)
  }, 20_000)

  it('cuts the connection when the upload stalls after the response head; a moving upload and a finished one are not cut', async () => {
    // The backend's head and heartbeats keep the response moving while the upload has stopped.
    const cut = await stalledUpload(proxy.port, 'PUT /h0/early HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n', 'a'.repeat(1000))
    await expect.poll(cut.got, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 200 /)
    await Promise.race([cut.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('connection not cut')), 5_000))])
    expect(cut.got()).not.toContain('size=')
    await expect.poll(() => aborted, { timeout: 5_000 }).toBe(3)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'code="REQUEST_TIMEOUT"'), { timeout: 5_000 }).toBe(3)
    expect(metricSum(await metrics(proxy), 'igw_client_aborts_total')).toBe(0)

    // Slow but moving (a chunk every 100 ms, ~1 s in all, longer than bodyIdleMs), before and after
    // the head; and an upload done whose response then streams for 1.4 s with nothing more sent.
    const moving = (path: string) => request(`${proxy.url}${path}`, { method: 'PUT', headers: { 'content-length': String(10 * 512) }, body: slowBody(10, 100), headersTimeout: 10_000, bodyTimeout: 10_000 }).then((r) => r.body.text())
    const finished = request(`${proxy.url}/h2/early`, { method: 'PUT', body: 'x'.repeat(100), headersTimeout: 10_000, bodyTimeout: 10_000 }).then((r) => r.body.text())
    const [a, b2, c, d] = await Promise.all([moving('/h2/files'), moving('/h0/early'), finished, moving('/h0/files')])
    expect(a).toBe('size=5120')
    expect(b2).toMatch(/^\.+size=5120$/)
    expect(c).toMatch(/^\.+size=100$/)
    expect(d).toBe('size=5120')
    expect(metricSum(await metrics(proxy), 'igw_proxy_errors_total')).toBe(3)
  }, 20_000)

  it('an upstream that stops reading the body is named: 504, not a 408 blaming the client', async () => {
    const c = await stalledUpload(proxy.port, 'PUT /deaf/x HTTP/1.1\r\nhost: x\r\ncontent-length: 268435456\r\n\r\n', '')
    // Far more than the socket buffers on the way hold: the proxy stops reading the client once the upstream stops.
    const chunk = Buffer.alloc(1 << 20, 97)
    // The client never stops: it keeps 4 MiB queued toward the proxy until the answer comes.
    const until = Date.now() + 5_000
    for (let sent = 0; !c.got() && sent < 256 && Date.now() < until; await new Promise((r) => setTimeout(r, 10))) {
      while (c.socket.writableLength < 4 << 20 && sent < 256) c.socket.write(chunk), sent++
    }
    await expect.poll(c.got, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 504 [^]*\r\n\r\n[^]*read none of the request body for 600 ms/)
    await expect.poll(async () => metricSum(await metrics(proxy), 'igw_proxy_errors_total', 'route="deaf",code="UPSTREAM_TIMEOUT"'), { timeout: 5_000 }).toBe(1)
  }, 20_000)
})
