// A reply that goes out before the client finished sending its request body (a refusal, or an
// upload cut on its way upstream): the client must get that reply, and the connection must not
// be reused with the rest of the body still on it. Real igw proxy, real backends, real clients.
import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client } from 'undici'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/**
 * A plain client that writes its whole request (head and body) before it reads, as many do
 * (scripts, curl-like tools): the outcome is the status line it got, or the error it hit.
 */
function uploadThenRead(port: number, head: string, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    const t = setTimeout(() => {
      s.destroy()
      resolve(`timeout after ${JSON.stringify(out.slice(0, 40))}`)
    }, 15_000)
    s.on('data', (d: Buffer) => (out += d.toString('latin1')))
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t)
      resolve(`error ${e.code ?? e.message}`)
    })
    s.on('close', () => {
      clearTimeout(t)
      resolve(out.slice(0, out.indexOf('\r\n')))
    })
    s.write(head)
    s.write(body)
  })
}

describe('replies before the request body was read', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    proxy = await startTestProxy({
      mode: 'ingress',
      routes: [
        { name: 'gql', match: { pathPrefix: '/graphql' }, upstream: backend.url, type: 'graphql', maxBodyBytes: 1024 },
        { name: 'files', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http', maxBodyBytes: 1024 },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('an upload refused before it was read gets its 413/415, not a reset connection (lingering close)', async () => {
    const body = Buffer.alloc(8 * 1024 * 1024, 'a')
    // Before: the socket was closed with the upload still arriving, the kernel answered it with
    // a reset, and the client got EPIPE/ECONNRESET instead of the reply (nearly every time).
    const outcomes: string[] = []
    for (let i = 0; i < 4; i++) {
      outcomes.push(await uploadThenRead(proxy.port, `POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`, body))
      outcomes.push(await uploadThenRead(proxy.port, `POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n`, body.subarray(0, 1000)))
    }
    expect(outcomes).toEqual(Array.from({ length: 4 }, () => ['HTTP/1.1 413 Payload Too Large', 'HTTP/1.1 415 Unsupported Media Type']).flat())
  })

  it('a chunked upload over an http route limit gets 413 with Connection: close, and the client goes on with a fresh connection', async () => {
    const client = new Client(proxy.url, { headersTimeout: 5_000, bodyTimeout: 5_000 })
    try {
      const chunk = Buffer.alloc(1024 * 1024, 'a')
      for (let i = 0; i < 3; i++) {
        async function* upload(): AsyncGenerator<Buffer> {
          for (let k = 0; k < 4; k++) yield chunk
        }
        // Chunked: undici streams an async iterable without a length.
        const refused = await client.request({ path: '/upload', method: 'POST', body: Readable.from(upload()) })
        expect(refused.statusCode).toBe(413)
        expect(((await refused.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('PAYLOAD_TOO_LARGE')
        // Before: the 413 said keep-alive while the rest of the body sat unread on a paused
        // socket, the client reused the connection and this request was never read (headers
        // timeout, then ECONNRESET).
        const next = await client.request({ path: '/after', method: 'GET' })
        expect(next.statusCode).toBe(200)
        expect(((await next.body.json()) as { url: string }).url).toBe('/after')
        expect(refused.headers.connection).toBe('close')
      }
    } finally {
      await client.close()
    }
  })

  it("a backend's early answer to an upload (before reading it) ends the client connection, so the client's next request is not lost", async () => {
    // The backend answers 413 as soon as it has the head, without reading the body, and closes.
    const open = new Set<Socket>()
    const early: Server = createServer((sock) => {
      open.add(sock)
      sock.on('close', () => open.delete(sock))
      sock.on('error', () => {})
      let buf = ''
      const onData = (d: Buffer): void => {
        buf += d.toString('latin1')
        if (!buf.includes('\r\n\r\n')) return
        sock.removeListener('data', onData)
        sock.resume()
        if (buf.startsWith('GET /after ')) sock.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok')
        else sock.end('HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!')
      }
      sock.on('data', onData)
    })
    early.listen(0, '127.0.0.1')
    await once(early, 'listening')
    const p = await startTestProxy({ routes: [{ name: 'up', upstream: `http://127.0.0.1:${(early.address() as AddressInfo).port}`, type: 'http', maxBodyBytes: 64 * 1024 * 1024 }] })
    const client = new Client(p.url, { headersTimeout: 5_000, bodyTimeout: 5_000 })
    try {
      for (let i = 0; i < 3; i++) {
        const refused = await client.request({ path: '/upload', method: 'POST', body: Buffer.alloc(8 * 1024 * 1024, 'a') })
        expect(refused.statusCode).toBe(413)
        expect(await refused.body.text()).toBe('big!')
        // Before: relayed with keep-alive; undici had destroyed the request stream it was
        // sending, the rest of the upload sat unread on a paused client socket, and this request
        // on the same connection was never read (headers timeout).
        const next = await client.request({ path: '/after', method: 'GET' })
        expect(next.statusCode).toBe(200)
        expect(await next.body.text()).toBe('ok')
        expect(refused.headers.connection).toBe('close')
      }
    } finally {
      await client.close()
      await p.close()
      for (const s of open) s.destroy()
      await new Promise<void>((r) => early.close(() => r()))
    }
  })
})
