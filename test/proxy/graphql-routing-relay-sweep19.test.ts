// Request routing and the HTTP relay core (sweep 19): a POST's URL cannot run something other
// than the body the filters judged; blank X-Forwarded-* from a trusted hop name no hop; a 304 the
// gateway answers itself invents no Content-Length. Real igw proxy, real node:http backends,
// undici clients and raw sockets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { buildSchema, graphql } from 'graphql'
import { echoHandler, rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

describe('a POST whose URL carries GraphQL parameters', () => {
  // A backend that reads a request the way express-graphql (and koa-graphql, the hapi and fastify
  // ports of it) does: the URL's query/variables/operationName first, the body for what is left.
  const schema = buildSchema('type Query { hello: String } type Mutation { deleteAll: Boolean }')
  let deleted = 0
  const root = { hello: () => 'world', deleteAll: () => ++deleted > 0 }
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const url = new URLSearchParams((req.url ?? '').split('?')[1] ?? '')
        const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>) : {}
        const varText = url.get('variables')
        void graphql({
          schema,
          rootValue: root,
          source: url.get('query') ?? (body.query as string),
          variableValues: varText !== null ? (JSON.parse(varText) as Record<string, unknown>) : (body.variables as Record<string, unknown> | undefined),
          operationName: url.get('operationName') ?? (body.operationName as string | undefined),
        }).then((result) => {
          const text = JSON.stringify(result)
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
          res.end(text)
        })
      })
    })
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url, type: 'graphql' }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function post(target: string, body: unknown): Promise<{ status: number; json: unknown }> {
    const res = await request(`${proxy.url}${target}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.statusCode, json: await res.body.json() }
  }

  it('is refused with 400 when the URL names a query, variables, extensions or documentId: the backend never runs the URL’s mutation behind the body’s query', async () => {
    const hits = backend.requests.length
    const mutation = encodeURIComponent('mutation { deleteAll }')
    for (const target of [`/graphql?query=${mutation}`, `/graphql?x=1&query=${mutation}`, `/graphql?variables=${encodeURIComponent('{"id":1}')}`, `/graphql?extensions=%7B%7D`, '/graphql?documentId=abc']) {
      const r = await post(target, { query: '{ hello }' })
      expect(r.status, target).toBe(400)
      expect((r.json as GqlError).errors[0]!.extensions.code, target).toBe('BAD_REQUEST')
    }
    expect(deleted).toBe(0)
    expect(backend.requests.length).toBe(hits)
  })

  it('is refused when the URL’s operationName selects another operation than the body does', async () => {
    const doc = 'query Safe { hello } mutation Evil { deleteAll }'
    const r = await post('/graphql?operationName=Evil', { query: doc, operationName: 'Safe' })
    expect(r.status).toBe(400)
    expect((r.json as GqlError).errors[0]!.message).toContain('operationName')
    // No operationName in the body, two operations: the filters see none selected, the URL's would run.
    expect((await post('/graphql?operationName=Evil', { query: doc })).status).toBe(400)
    expect(deleted).toBe(0)
  })

  it('passes when the URL only repeats the operation the body runs, is empty, or carries other parameters', async () => {
    const ok = { data: { hello: 'world' } }
    expect(await post('/graphql?operationName=Safe', { query: 'query Safe { hello }', operationName: 'Safe' })).toEqual({ status: 200, json: ok })
    expect(await post('/graphql?operationName=Safe', { query: 'query Safe { hello }' })).toEqual({ status: 200, json: ok })
    // An empty one selects no other operation (this backend answers its own error): not refused here.
    const hits = backend.requests.length
    expect((await post('/graphql?operationName=', { query: '{ hello }' })).status).toBe(200)
    expect(backend.requests.length).toBe(hits + 1)
    expect(await post('/graphql?trace=1&op=Safe', { query: '{ hello }' })).toEqual({ status: 200, json: ok })
    expect(await post('/graphql', { query: '{ hello }' })).toEqual({ status: 200, json: ok })
  })
})

describe('X-Forwarded-* behind a trusted hop (forwarded.trustIncoming: true)', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    proxy = await startTestProxy({ routes: [{ name: 'h', upstream: backend.url, type: 'http' }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function forwarded(headLines: string): Promise<Record<string, string[]>> {
    const raw = (await rawExchange(proxy.port, `GET /x HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n${headLines}\r\n`, 5000)).toString('latin1')
    expect(raw.startsWith('HTTP/1.1 200 ')).toBe(true)
    const echo = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { rawHeaders: string[] }
    const out: Record<string, string[]> = {}
    for (let i = 0; i < echo.rawHeaders.length; i += 2) {
      const name = echo.rawHeaders[i]!.toLowerCase()
      if (name.startsWith('x-forwarded-')) (out[name] ??= []).push(echo.rawHeaders[i + 1]!)
    }
    return out
  }

  it('an empty incoming X-Forwarded-For/-Proto/-Host names no hop: the backend gets the client address, http and the Host, not blanks', async () => {
    expect(await forwarded('X-Forwarded-For:\r\nX-Forwarded-Proto:\r\nX-Forwarded-Host:\r\n')).toEqual({
      'x-forwarded-for': ['127.0.0.1'],
      'x-forwarded-proto': ['http'],
      'x-forwarded-host': ['app.example'],
    })
    // An empty line beside real ones is skipped; the chain is kept in order.
    expect(await forwarded('X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For:\r\nX-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Proto:\r\nX-Forwarded-Proto: https\r\n')).toEqual({
      'x-forwarded-for': ['203.0.113.9, 10.0.0.2, 127.0.0.1'],
      'x-forwarded-proto': ['https'],
      'x-forwarded-host': ['app.example'],
    })
    // IPv6 entries in the chain pass as they are.
    expect((await forwarded('X-Forwarded-For: 2001:db8::7\r\n'))['x-forwarded-for']).toEqual(['2001:db8::7, 127.0.0.1'])
  })
})

describe('a 304 the gateway answers itself (the cache filter revalidating a client)', () => {
  const ETAG = '"v7"'
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        const body = JSON.stringify({ data: { hello: 'world' } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), etag: ETAG })
        res.end(body)
      })
    })
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('carries no invented Content-Length: 0 (RFC 9110 §8.6: only the length a 200 would have)', async () => {
    const target = `/graphql?query=${encodeURIComponent('{ hello }')}`
    const full = await request(`${proxy.url}${target}`)
    const text = await full.body.text()
    expect(full.statusCode).toBe(200)
    await expect.poll(async () => (await request(`${proxy.url}${target}`)).headers['x-cache'], { timeout: 10_000 }).toBe('HIT')
    // The Host of the requests that filled the cache: it is part of the key.
    const raw = (await rawExchange(proxy.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nIf-None-Match: ${ETAG}\r\nConnection: close\r\n\r\n`, 5000)).toString('latin1')
    const head = raw.slice(0, raw.indexOf('\r\n\r\n')).toLowerCase()
    expect(head.startsWith('http/1.1 304 ')).toBe(true)
    expect(head).toContain(`etag: ${ETAG}`)
    // No length, or the representation's own (what the 200 carried), never "0".
    const length = /\r\ncontent-length: *(\d+)/.exec(head)?.[1]
    expect(length === undefined || length === String(Buffer.byteLength(text))).toBe(true)
    expect(head).not.toContain('transfer-encoding')
  })
})
