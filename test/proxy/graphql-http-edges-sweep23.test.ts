// GraphQL-over-HTTP edges on a GraphQL route with no filters, sweep 23:
//  - A mutation sent by GET was refused (405) only where a persisted or cache filter sat on the
//    route; every other backend that executes GET mutations ran it (a link or an <img> on another
//    site runs it with the user's cookies). Now 405 with Allow: POST on every GraphQL route.
//  - A body declared in another charset than UTF-8 was decoded as UTF-8 anyway: UTF-16 was
//    refused as "Malformed JSON", Latin-1 "é" reached filters and the backend as U+FFFD. Now 415.
//  - An upstream that died mid-body ended an HTTP/1.0 client's response (close-delimited, no
//    chunked framing) with a clean FIN, so the cut export read as complete. Now a reset.
// A real proxy, a real node:http backend, undici and raw socket clients.
import { once } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { connect } from 'node:net'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('GraphQL-over-HTTP edges', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen: { method: string; url: string; body: string }[] = []
  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, body })
        if (req.url === '/export') {
          // a close-delimited answer to an HTTP/1.0 client: head, part of the body, then gone
          res.writeHead(200, { 'content-type': 'application/x-ndjson' })
          res.write('{"n":1}\n{"n":2}\n')
          setTimeout(() => res.socket?.destroy(), 50)
          return
        }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{"ok":true}}')
      })
    })
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url, type: 'graphql', filters: [] }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('refuses a mutation sent by GET with 405 and Allow: POST; a query by GET still passes', async () => {
    const before = seen.length
    const mutation = await request(`${proxy.url}/graphql?query=${encodeURIComponent('mutation { deleteAll }')}`)
    const body = (await mutation.body.json()) as { errors: { extensions: { code: string } }[] }
    expect({ status: mutation.statusCode, allow: mutation.headers.allow, code: body.errors[0]!.extensions.code }).toEqual({ status: 405, allow: 'POST', code: 'METHOD_NOT_ALLOWED' })
    expect(seen.length).toBe(before) // never reached the backend
    const query = await request(`${proxy.url}/graphql?query=${encodeURIComponent('{ ok }')}`)
    await query.body.text()
    expect(query.statusCode).toBe(200)
    expect(seen.at(-1)!.method).toBe('GET')
  })

  it('refuses a body in a charset other than UTF-8 with 415, and takes utf-8 in any spelling', async () => {
    const before = seen.length
    for (const type of ['application/json; charset=utf-16', 'application/json;charset="ISO-8859-1"']) {
      const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': type }, body: '{"query":"{ ok }"}' })
      const body = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
      expect({ status: r.statusCode, code: body.errors[0]!.extensions.code }).toEqual({ status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' })
      expect(body.errors[0]!.message).toMatch(/UTF-8/)
    }
    expect(seen.length).toBe(before)
    for (const type of ['application/json; charset=UTF-8', 'application/json; charset="utf8"', 'application/json']) {
      const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': type }, body: '{"query":"{ ok }"}' })
      await r.body.text()
      expect(r.statusCode, type).toBe(200)
    }
    // no Content-Type at all: GraphQL clients that omit it still send JSON
    const bare = await request(`${proxy.url}/graphql`, { method: 'POST', body: '{"query":"{ ok }"}' })
    await bare.body.text()
    expect(bare.statusCode).toBe(200)
  })

  it('resets an HTTP/1.0 client whose close-delimited answer the upstream cut, instead of ending it cleanly', async () => {
    const sock = connect(proxy.port, '127.0.0.1')
    await once(sock, 'connect')
    const ended = new Promise<'reset' | 'clean'>((resolve) => {
      sock.on('error', () => resolve('reset'))
      sock.on('end', () => resolve('clean'))
    })
    let got = ''
    sock.on('data', (c: Buffer) => (got += c.toString()))
    sock.write('GET /export HTTP/1.0\r\nhost: x\r\n\r\n')
    expect(await ended).toBe('reset')
    expect(got).toContain('{"n":1}')
    sock.destroy()
  })
})
