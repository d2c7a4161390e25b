// An upstream whose answer is broken (headers over the limit, closed mid-head, a body that does
// not match its Content-Length, bytes that are no HTTP) is a 502 that says what the upstream did,
// as Envoy and nginx name it; it was "upstream … failed: UND_ERR_HEADERS_OVERFLOW" (undici's
// internal code) or llhttp's message. Through a real igw and a raw TCP backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const ANSWERS: Record<string, string> = {
  '/big': `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\ncontent-length: 2\r\n\r\nok`,
  '/midhead': 'HTTP/1.1 200 OK\r\nx-a: 1\r\n',
  '/nothing': '',
  '/lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok',
  '/garbage': 'HELLO THERE\r\n\r\n',
}

let up: RawTcpUpstream
let proxy: TestProxy
beforeAll(async () => {
  up = await startRawTcpUpstream((sock, _head, path) => {
    sock.end(ANSWERS[path] ?? 'HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n')
  })
  proxy = await startTestProxy({ routes: [{ name: 'all', match: { pathPrefix: '/' }, upstream: up.url, type: 'http' }] })
})
afterAll(async () => {
  await proxy?.close()
  await up?.close()
})

async function ask(path: string): Promise<{ status: number; message: string; code: string }> {
  const res = await request(`${proxy.url}${path}`)
  const body = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
  return { status: res.statusCode, message: body.errors[0]!.message, code: body.errors[0]!.extensions.code }
}

describe('a broken upstream answer is a 502 that says what the upstream did', () => {
  it('response headers over the limit', async () => {
    const r = await ask('/big')
    expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(r.message).toMatch(/sent response headers larger than the \d+ bytes this gateway reads/)
    expect(r.message).not.toContain('UND_ERR')
  })

  it('a connection closed before the head was complete, or with no answer at all', async () => {
    for (const path of ['/midhead', '/nothing']) {
      const r = await ask(path)
      expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
      expect(r.message).toMatch(/closed the connection before its response was complete/)
    }
  })

  it('Content-Length values that disagree', async () => {
    const r = await ask('/lengths')
    expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(r.message).toMatch(/body does not match its Content-Length/)
  })

  it('an answer that is no HTTP', async () => {
    const r = await ask('/garbage')
    expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(r.message).toMatch(/sent a malformed HTTP response/)
  })
})
