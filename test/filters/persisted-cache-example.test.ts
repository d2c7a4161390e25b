// config/examples/persisted-cache.yaml, loaded as shipped (env interpolation and all) and run
// against the demo backend: the walkthrough its comments promise works.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { loadConfigFile } from '../../config/load.ts'
import { startProxy, type ProxyHandle } from '../../proxy/supervisor.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { LogCapture, ROOT } from '../helpers/proxy.ts'

describe('config/examples/persisted-cache.yaml', () => {
  let backend: DemoBackend
  let proxy: ProxyHandle
  let url: string
  beforeAll(async () => {
    backend = await startDemoBackend()
    const { config } = loadConfigFile(join(ROOT, 'config/examples/persisted-cache.yaml'), { ...process.env, APP_URL: backend.url, IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0', IGW_WORKERS: '2' })
    proxy = await startProxy({ config, logDestination: new LogCapture() as never })
    url = `http://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const send = async (body: unknown, headers: Record<string, string> = {}) => {
    const r = await request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    return { status: r.statusCode, cache: r.headers['x-cache'], json: (await r.body.json()) as { data?: Record<string, unknown>; errors?: { extensions?: { code?: string } }[] } }
  }
  const byId = (id: string, variables: Record<string, unknown>) => ({ extensions: { persistedQuery: { version: 1, sha256Hash: id } }, variables })

  it('serves manifest ids, caches them, and a rename invalidates the entity and the lists', async () => {
    const a = await send(byId('entity', { id: '1' }))
    const b = await send(byId('entity', { id: '1' }))
    expect([a.cache, b.cache]).toEqual(['MISS', 'HIT'])
    expect(b.json.data).toMatchObject({ entity: { id: '1', name: 'Entity 1' } })
    await send(byId('entities', { first: 3 }))
    expect((await send(byId('entities', { first: 3 }))).cache).toBe('HIT')
    const m = await send(byId('rename', { id: '1', name: 'Renamed' }))
    expect(m.json.data).toMatchObject({ updateEntity: { id: '1', name: 'Renamed' } })
    const after = await send(byId('entity', { id: '1' }))
    expect([after.cache, (after.json.data!.entity as { name: string }).name]).toEqual(['MISS', 'Renamed'])
    expect((await send(byId('entities', { first: 3 }))).cache).toBe('MISS')
  })

  it('holds acme to the manifest while the default tenant may run ad-hoc queries', async () => {
    expect((await send({ query: '{ hello }' })).json.data).toEqual({ hello: 'Hello, world!' })
    const denied = await send({ query: '{ hello }' }, { 'x-tenant-id': 'acme' })
    expect([denied.status, denied.json.errors?.[0]?.extensions?.code]).toEqual([400, 'PERSISTED_QUERY_NOT_ALLOWED'])
    expect((await send(byId('entity', { id: '2' }), { 'x-tenant-id': 'acme' })).json.data).toMatchObject({ entity: { id: '2' } })
  })
})
