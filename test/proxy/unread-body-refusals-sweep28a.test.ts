// A refusal sent while the client is still uploading, on a connection that ends after it (the
// client's Connection: close, HTTP/1.0, an Expect: 100-continue never answered with 100, the
// refusal's own close): the connection must linger so the client reads the refusal. Closed at once
// with the upload still arriving, the kernel reset it and the client got EPIPE/ECONNRESET instead
// of its 403/404/417/501 — a filter refusing an upload (the tenant filter), or a refusal before
// routing. Real igw, real backend, raw clients that write the whole request before reading.
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/** Writes head and body, then reads: the status line it got, or the error it hit. */
function uploadThenRead(port: number, head: string, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    const t = setTimeout(() => {
      s.destroy()
      resolve(`timeout after ${JSON.stringify(out.slice(0, 40))}`)
    }, 8_000)
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

const body = Buffer.alloc(8 * 1024 * 1024, 'a')
let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    mode: 'ingress',
    tenants: { acme: {} },
    routes: [
      { name: 'files', match: { pathPrefix: '/up' }, upstream: backend.url, type: 'http', maxBodyBytes: '64mib', filters: [{ name: 'request-id' }, { name: 'tenant' }] },
      { name: 'open', match: { pathPrefix: '/open' }, upstream: backend.url, type: 'http', maxBodyBytes: '64mib' },
    ],
  } as never)
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('refusals of an upload still arriving', () => {
  it("a filter's refusal reaches a client whose connection ends after it (Connection: close, HTTP/1.0, Expect unanswered)", async () => {
    const heads = [
      `POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`,
      `POST /up HTTP/1.0\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`,
      // RFC 9110 §10.1.1 lets a client send the body without waiting for the 100.
      `POST /up HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: ${body.length}\r\n\r\n`,
      `POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n${body.length.toString(16)}\r\n`,
    ]
    const outcomes: string[] = []
    for (const head of heads) outcomes.push(await uploadThenRead(proxy.port, head, body))
    // (no tenant named: the tenant filter refuses)
    expect(outcomes).toEqual(['HTTP/1.1 403 Forbidden', 'HTTP/1.1 403 Forbidden', 'HTTP/1.1 403 Forbidden', 'HTTP/1.1 403 Forbidden'])
    expect(backend.requests).toHaveLength(0)
  })

  it('a refusal before routing reaches an uploading client (no route, bad Host, TRACE, an unsupported coding, an unknown Expect)', async () => {
    const cases: [string, string][] = [
      [`POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`, 'HTTP/1.1 404 Not Found'],
      [`POST /open HTTP/1.1\r\nhost: bad/host\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`, 'HTTP/1.1 400 Bad Request'],
      [`TRACE /open HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`, 'HTTP/1.1 405 Method Not Allowed'],
      [`POST /open HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n${body.length.toString(16)}\r\n`, 'HTTP/1.1 501 Not Implemented'],
      [`POST /open HTTP/1.1\r\nhost: x\r\nexpect: x-unknown\r\ncontent-length: ${body.length}\r\n\r\n`, 'HTTP/1.1 417 Expectation Failed'],
    ]
    const outcomes: string[] = []
    for (const [head] of cases) outcomes.push(await uploadThenRead(proxy.port, head, body))
    expect(outcomes).toEqual(cases.map(([, want]) => want))
    expect(backend.requests).toHaveLength(0)
  })

  it('an upload the chain admits still goes through whole', async () => {
    const out = await uploadThenRead(proxy.port, `POST /up HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n`, body)
    expect(out).toBe('HTTP/1.1 200 OK')
    expect(backend.requests).toHaveLength(1)
  })
})
