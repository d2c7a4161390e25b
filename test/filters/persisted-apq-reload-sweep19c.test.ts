// Persisted filter sweep 19c: APQ registrations across config reloads. The worker kept one
// module-level LRU, replaced whenever a filter asked for another `apq.maxEntries`: with two
// routes of different sizes, every reload (any config change, a control-plane push) had the
// first route's filter shrink it to its size and the second's grow it back from what was left,
// so the bigger route lost its registrations (clients got PersistedQueryNotFound and had to
// register again). And a resize copied the entries most recent first, so the new LRU held them
// in reverse: its next evictions dropped the hottest documents. Real igw, the real
// graphql-yoga demo backend, undici client.
import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (q: string) => createHash('sha256').update(q).digest('hex')
const doc = (i: number) => `query Q${i} { hello(name: "n${i}") }`

describe('APQ registrations survive a reload', () => {
  let backend: DemoBackend | undefined
  let proxy: TestProxy | undefined
  afterEach(async () => {
    await proxy?.close()
    await backend?.close()
    proxy = backend = undefined
  })

  async function post(path: string, body: unknown) {
    const res = await request(`${proxy!.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return (await res.body.json()) as { data?: { hello: string }; errors?: { extensions?: { code?: string } }[] }
  }
  const register = (path: string, i: number) => post(path, { query: doc(i), extensions: { persistedQuery: { version: 1, sha256Hash: sha(doc(i)) } } })
  const byHash = (path: string, i: number) => post(path, { extensions: { persistedQuery: { version: 1, sha256Hash: sha(doc(i)) } } })

  function config(sizes: [number, number], tag: string) {
    return {
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      tenants: { acme: {}, [tag]: {} },
      routes: [
        { name: 'small', match: { pathPrefix: '/small' }, upstream: backend!.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', apq: { maxEntries: sizes[0] } }] },
        { name: 'big', upstream: backend!.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', apq: { maxEntries: sizes[1] } }] },
      ],
    }
  }

  it('two routes with different apq.maxEntries: the bigger one keeps its registrations', async () => {
    backend = await startDemoBackend()
    const first = config([2, 50], 'v1')
    proxy = await startTestProxy(first as never)
    for (let i = 0; i < 6; i++) expect((await register('/graphql', i)).data?.hello).toBe(`Hello, n${i}!`)
    for (let i = 0; i < 6; i++) expect((await byHash('/graphql', i)).data?.hello).toBe(`Hello, n${i}!`)
    // Any change to the config: a new version, new filter instances.
    const r = await proxy.applyConfig(validateConfig(config([2, 50], 'v2') as never))
    expect(r.ok).toBe(true)
    for (let i = 0; i < 6; i++) {
      const hit = await byHash('/graphql', i)
      expect(hit.errors?.[0]?.extensions?.code, `registration ${i} after the reload`).toBeUndefined()
      expect(hit.data?.hello).toBe(`Hello, n${i}!`)
    }
  })

  it('a reload that resizes the LRU keeps the order of use: the coldest registrations go first', async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy(config([3, 3], 'v1') as never)
    for (let i = 0; i < 3; i++) await register('/graphql', i)
    expect((await byHash('/graphql', 0)).data?.hello).toBe('Hello, n0!') // 0 is now the most recently used
    expect((await proxy.applyConfig(validateConfig(config([4, 4], 'v2') as never))).ok).toBe(true)
    // Two new registrations in an LRU of 4 evict one: the least recently used (1), not 0.
    await register('/graphql', 3)
    await register('/graphql', 4)
    expect((await byHash('/graphql', 0)).data?.hello).toBe('Hello, n0!')
    expect((await byHash('/graphql', 1)).errors?.[0]?.extensions?.code).toBe('PERSISTED_QUERY_NOT_FOUND')
  })
})
