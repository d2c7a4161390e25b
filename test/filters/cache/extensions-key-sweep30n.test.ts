// The request's `extensions` reach the backend, which may answer by them (a locale, a client
// name, a feature flag; the demo backend's `echo { extensions }` returns them). They were no part
// of the cache key: the first client's answer was served to every client that sent others, over
// POST and over GET (whose `extensions` parameter the key's request target leaves out).
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let backend: DemoBackend
let proxy: TestProxy

beforeAll(async () => {
  backend = await startDemoBackend()
  proxy = await startTestProxy({
    tenants: { acme: {} },
    routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 300 }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const QUERY = '{ echo { extensions } }'

async function read(res: Awaited<ReturnType<typeof request>>): Promise<{ cache: unknown; extensions: unknown }> {
  const json = (await res.body.json()) as { data: { echo: { extensions: string } } }
  return { cache: res.headers['x-cache'], extensions: JSON.parse(json.data.echo.extensions) }
}

function post(query: string, extensions?: Record<string, unknown>): Promise<{ cache: unknown; extensions: unknown }> {
  const body = JSON.stringify(extensions === undefined ? { query } : { query, extensions })
  return request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body }).then(read)
}

function get(query: string, extensions: Record<string, unknown>): Promise<{ cache: unknown; extensions: unknown }> {
  const q = new URLSearchParams({ query, extensions: JSON.stringify(extensions) })
  return request(`${proxy.url}/graphql?${q}`, { headers: { 'x-tenant-id': 'acme' } }).then(read)
}

describe('extensions are part of the cache key', () => {
  it('POST: a request with other extensions is not answered with the first one’s result', async () => {
    const q = `query Post ${QUERY}`
    expect(await post(q, { locale: 'de' })).toEqual({ cache: 'MISS', extensions: { locale: 'de' } })
    expect(await post(q, { locale: 'fr' })).toEqual({ cache: 'MISS', extensions: { locale: 'fr' } })
    expect(await post(q)).toEqual({ cache: 'MISS', extensions: null })
    // Each is stored under its own extensions; key order does not split them.
    expect(await post(q, { locale: 'de' })).toEqual({ cache: 'HIT', extensions: { locale: 'de' } })
    expect(await post(q, { locale: 'fr', b: [1, { y: 2, x: 1 }] })).toEqual({ cache: 'MISS', extensions: { locale: 'fr', b: [1, { y: 2, x: 1 }] } })
    expect(await post(q, { b: [1, { x: 1, y: 2 }], locale: 'fr' })).toMatchObject({ cache: 'HIT' })
    expect(await post(q)).toEqual({ cache: 'HIT', extensions: null })
  })

  it('GET: the extensions parameter keys the entry too', async () => {
    const q = `query Get ${QUERY}`
    expect(await get(q, { locale: 'de' })).toEqual({ cache: 'MISS', extensions: { locale: 'de' } })
    expect(await get(q, { locale: 'fr' })).toEqual({ cache: 'MISS', extensions: { locale: 'fr' } })
    expect(await get(q, { locale: 'fr' })).toEqual({ cache: 'HIT', extensions: { locale: 'fr' } })
  })

  it('extensions holding a number beyond 2^53 bypass the cache', async () => {
    const body = `{"query":"query Big ${QUERY}","extensions":{"n":9007199254740993}}`
    const ask = () => request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body })
    for (let i = 0; i < 2; i++) {
      const res = await ask()
      await res.body.dump()
      expect(res.headers['x-cache']).toBe('BYPASS')
    }
  })
})
