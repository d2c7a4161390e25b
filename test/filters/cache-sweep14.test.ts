// Response cache sweep: what the upstream says a response varies on (Vary) must hold for every
// request a stored copy answers, CORS grants must survive a hit, and a mutation sent with GET
// never runs. Real proxy, real node:http backend that varies its answers on request headers.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/**
 * Answers in the request's language (and says so with Vary: Accept-Language); grants CORS to
 * the request's Origin the way graphql-yoga does (reflected, Vary: Origin).
 */
function handler(stats: { calls: number }) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    req.resume()
    req.on('end', () => {
      stats.calls++
      const lang = req.headers['accept-language'] ?? 'en'
      const body = JSON.stringify({ data: { greeting: lang === 'de' ? 'Hallo' : 'Hello', url: req.url } })
      const h: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }
      const vary = ['Accept-Language']
      const origin = req.headers.origin
      if (typeof origin === 'string') {
        h['access-control-allow-origin'] = origin
        h['access-control-allow-credentials'] = 'true'
        vary.push('Origin')
      }
      h.vary = vary.join(', ')
      res.writeHead(200, h)
      res.end(body)
    })
  }
}

describe('cache sweep 14', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const stats = { calls: 0 }

  beforeAll(async () => {
    backend = await startRawBackend(handler(stats))
    const filters = (vary: string[]) => [{ name: 'tenant' }, { name: 'cache', vary: { headers: vary } }] as never
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        { name: 'plain', match: { pathPrefix: '/plain' }, upstream: backend.url, filters: filters([]) },
        { name: 'lang', match: { pathPrefix: '/lang' }, upstream: backend.url, filters: filters(['accept-language', 'origin']) },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function ask(path: string, headers: Record<string, string>, query = '{ greeting }') {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: JSON.stringify({ query }) })
    const json = (await res.body.json()) as { data?: { greeting: string } }
    return { status: res.statusCode, cache: res.headers['x-cache'], acao: res.headers['access-control-allow-origin'], greeting: json.data?.greeting }
  }

  it('never answers a request with a stored response that varies on a header the key ignores', async () => {
    const en = await ask('/plain/graphql', { 'accept-language': 'en' })
    expect(en.greeting).toBe('Hello')
    const de = await ask('/plain/graphql', { 'accept-language': 'de' })
    expect(de.greeting).toBe('Hallo') // not the English copy
    expect(de.cache).toBe('MISS')
    const m = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
    expect(m).toMatch(/igw_cache_not_stored_total\{reason="vary"\} [1-9]/)
  })

  it('stores it when the key holds the header, one entry per value', async () => {
    const q = '{ greeting lang }'
    expect(await ask('/lang/graphql', { 'accept-language': 'en' }, q)).toMatchObject({ greeting: 'Hello', cache: 'MISS' })
    expect(await ask('/lang/graphql', { 'accept-language': 'de' }, q)).toMatchObject({ greeting: 'Hallo', cache: 'MISS' })
    expect(await ask('/lang/graphql', { 'accept-language': 'en' }, q)).toMatchObject({ greeting: 'Hello', cache: 'HIT' })
    expect(await ask('/lang/graphql', { 'accept-language': 'de' }, q)).toMatchObject({ greeting: 'Hallo', cache: 'HIT' })
  })

  it('a hit keeps the CORS grant the upstream made for that origin (a browser refuses one without it)', async () => {
    const q = '{ greeting cors }'
    const a = 'https://app.example'
    const b = 'https://admin.example'
    expect(await ask('/lang/graphql', { origin: a }, q)).toMatchObject({ cache: 'MISS', acao: a })
    expect(await ask('/lang/graphql', { origin: a }, q)).toMatchObject({ cache: 'HIT', acao: a })
    expect(await ask('/lang/graphql', { origin: b }, q)).toMatchObject({ cache: 'MISS', acao: b })
    expect(await ask('/lang/graphql', { origin: b }, q)).toMatchObject({ cache: 'HIT', acao: b })
  })

  it('a mutation sent with GET is refused (405), never run upstream', async () => {
    const before = stats.calls
    const q = encodeURIComponent('mutation { greeting }')
    const res = await request(`${proxy.url}/plain/graphql?query=${q}`, { headers: { 'x-tenant-id': 'acme' } })
    expect(res.statusCode).toBe(405)
    expect(res.headers.allow).toBe('POST')
    const body = (await res.body.json()) as { errors: { extensions: { code: string } }[] }
    expect(body.errors[0]!.extensions.code).toBe('METHOD_NOT_ALLOWED')
    const head = await request(`${proxy.url}/plain/graphql?query=${q}`, { method: 'HEAD', headers: { 'x-tenant-id': 'acme' } })
    expect(head.statusCode).toBe(405)
    await head.body.dump()
    expect(stats.calls).toBe(before)
  })

  it('Vary names are read in any case and spacing; accept-encoding and accept never block a store', async () => {
    const { storeDecision, varyIsKeyed } = await import('../../filters/cache/cache-control.ts')
    expect(varyIsKeyed(' Accept-Encoding ,ACCEPT', [])).toBe(true)
    expect(varyIsKeyed(['accept-encoding', ' X-User'], [])).toBe(false)
    expect(varyIsKeyed('X-User', ['x-user'])).toBe(true)
    expect(varyIsKeyed('x-user, *', ['x-user'])).toBe(false)
    expect(storeDecision(200, { vary: 'Accept-Language' }, 30).reason).toBe('vary')
    expect(storeDecision(200, { vary: 'Accept-Language' }, 30, Date.now(), ['accept-language']).reason).toBeUndefined()
  })
})

/**
 * Entities by id; a mutation writes first and then, per `x-test-mode`, answers slowly (past the
 * route's timeout), with `data: null` and an error (a resolver that wrote and then failed), or
 * with a 500 — in every case the write was made.
 */
function writeThenFailBackend() {
  const names = new Map<string, string>()
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const q = (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { query?: string }).query ?? ''
      const id = /id:\s*"([^"]+)"/.exec(q)?.[1] ?? '0'
      const send = (status: number, payload: unknown) => {
        const body = JSON.stringify(payload)
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) })
        res.end(body)
      }
      if (!/^\s*mutation\b/.test(q)) {
        send(200, { data: { entity: { id, name: names.get(id) ?? `Entity ${id}`, __typename: 'Entity' } } })
        return
      }
      names.set(id, /name:\s*"([^"]*)"/.exec(q)?.[1] ?? '')
      const mode = req.headers['x-test-mode']
      if (mode === 'slow') setTimeout(() => send(200, { data: { updateEntity: { id, __typename: 'Entity' } } }), 1_500)
      else if (mode === 'null') send(200, { data: null, errors: [{ message: 'Cannot return null for non-nullable field Mutation.updateEntity.', path: ['updateEntity'] }] })
      else send(500, { errors: [{ message: 'internal error after the write' }] })
    })
  }
  return { names, handler }
}

describe('cache sweep 14: a mutation that may have written invalidates what it may have touched', () => {
  let backend: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend(writeThenFailBackend().handler)
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'rw', upstream: backend.url, timeouts: { totalMs: 500 }, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300 }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  async function send(query: string, headers: Record<string, string> = {}) {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', ...headers }, body: JSON.stringify({ query }) })
    const json = (await res.body.json()) as { data?: { entity?: { name: string } } | null; errors?: { extensions?: { code?: string } }[] }
    return { status: res.statusCode, cache: res.headers['x-cache'], name: json.data?.entity?.name, code: json.errors?.[0]?.extensions?.code }
  }

  it.each([
    ['the gateway gave up waiting (504 UPSTREAM_TIMEOUT)', 'slow', '7', 504],
    ['the resolver wrote, then failed: data null with an error', 'null', '8', 200],
    ['the upstream answered 500 after the write', 'fail', '9', 500],
  ])('%s → the next read is fresh', async (_name, mode, id, status) => {
    const read = `{ entity(id: "${id}") { id name } }`
    expect(await send(read)).toMatchObject({ cache: 'MISS', name: `Entity ${id}` })
    expect(await send(read)).toMatchObject({ cache: 'HIT', name: `Entity ${id}` })
    const m = await send(`mutation { updateEntity(id: "${id}", name: "Renamed ${id}") { id } }`, { 'x-test-mode': mode })
    expect(m.status).toBe(status)
    const after = await send(read)
    expect(after.name).toBe(`Renamed ${id}`)
    expect(after.cache).toBe('MISS')
  })
})
