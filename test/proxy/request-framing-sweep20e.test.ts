// Requests the gateway must refuse rather than relay, as Envoy and nginx do: a transfer coding
// other than chunked (node decodes only the chunking and hands over still-coded bytes, which the
// backend got as a plain body) and a Host that is no host[:port] (node passes any value: it took a
// wildcard route by its suffix and reached the backend as Host and X-Forwarded-Host).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { rawExchange, startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

function split(raw: string): { status: number; head: string; error?: GqlError['errors'][0] } {
  const end = raw.indexOf('\r\n\r\n')
  const head = raw.slice(0, end)
  const body = raw.slice(end + 4)
  return { status: Number(head.split(' ')[1]), head, error: body.startsWith('{') ? (JSON.parse(body) as GqlError).errors[0] : undefined }
}

let wild: RawTcpUpstream
let other: RawTcpUpstream
let proxy: TestProxy
beforeAll(async () => {
  const ok = (sock: import('node:net').Socket) => sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok')
  wild = await startRawTcpUpstream(ok)
  other = await startRawTcpUpstream(ok)
  proxy = await startTestProxy({
    mode: 'ingress',
    routes: [
      { name: 'wild', match: { host: '*.example.com', pathPrefix: '/' }, upstream: wild.url, type: 'http' },
      { name: 'rest', match: { pathPrefix: '/' }, upstream: other.url, type: 'http' },
    ],
  } as never)
})
afterAll(async () => {
  await proxy?.close()
  await wild?.close()
  await other?.close()
})

function heads(): string[] {
  return [...wild.heads, ...other.heads]
}

describe('request transfer codings', () => {
  it('a coding other than chunked is 501 NOT_IMPLEMENTED and never forwarded; chunked in any case still is', async () => {
    const before = heads().length
    const gz = split((await rawExchange(proxy.port, 'POST /up HTTP/1.1\r\nhost: a.example.com\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n')).toString('latin1'))
    expect(gz.status).toBe(501)
    expect(gz.error?.extensions.code).toBe('NOT_IMPLEMENTED')
    expect(gz.error?.message).toContain('gzip, chunked')
    expect(gz.head.toLowerCase()).toContain('connection: close')
    const plain = split((await rawExchange(proxy.port, 'POST /up HTTP/1.1\r\nhost: a.example.com\r\ntransfer-encoding: Chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n')).toString('latin1'))
    expect(plain.status).toBe(200)
    expect(heads().slice(before).map((h) => h.split('\r\n')[0])).toEqual(['POST /up HTTP/1.1'])
  })
})

describe('Host header values', () => {
  it('a Host that is not host[:port] is 400 and reaches no backend (a suffix match took it to the wildcard route)', async () => {
    const before = heads().length
    for (const host of ['evil.com/.example.com', 'evil.com?.example.com', 'evil.com\\.example.com', 'a b.example.com', 'x.example.com:8o']) {
      const r = split((await rawExchange(proxy.port, `GET /p HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`)).toString('latin1'))
      expect(r.status, host).toBe(400)
      expect(r.error?.extensions.code, host).toBe('BAD_REQUEST')
    }
    expect(heads().slice(before)).toEqual([])
  })

  it('valid hosts are routed as before: names, ports, IP literals, a trailing dot', async () => {
    const wildBefore = wild.heads.length
    const otherBefore = other.heads.length
    for (const host of ['api.example.com', 'API.Example.com:8443', 'x_y.example.com.']) {
      const res = await request(`${proxy.url}/p`, { headers: { host } })
      expect(res.statusCode, host).toBe(200)
      await res.body.text()
    }
    for (const host of ['127.0.0.1:9', '[::1]:8080', 'localhost']) {
      const res = await request(`${proxy.url}/p`, { headers: { host } })
      expect(res.statusCode, host).toBe(200)
      await res.body.text()
    }
    expect(wild.heads.length - wildBefore).toBe(3)
    expect(other.heads.length - otherBefore).toBe(3)
  })
})

describe('a Host that is no host, on a gateway whose only route is a wildcard', () => {
  it('is refused before routing for a WebSocket upgrade too (which no Exchange checks): never bridged to that route’s backend', async () => {
    const up = await startRawTcpUpstream((sock) => sock.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'))
    const only = await startTestProxy({ mode: 'ingress', routes: [{ name: 'wild', match: { host: '*.example.com', pathPrefix: '/' }, upstream: up.url, type: 'http' }] } as never)
    try {
      const upgrade = (host: string) =>
        `GET /ws HTTP/1.1\r\nhost: ${host}\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n`
      const bad = split((await rawExchange(only.port, upgrade('evil.com/.example.com'))).toString('latin1'))
      expect(bad.status).toBe(400)
      expect(up.heads).toEqual([])
      // A valid name under the wildcard still reaches it (the backend's refusal is relayed).
      await rawExchange(only.port, upgrade('chat.example.com'))
      expect(up.heads.length).toBe(1)
    } finally {
      await only.close()
      await up.close()
    }
  })
})
