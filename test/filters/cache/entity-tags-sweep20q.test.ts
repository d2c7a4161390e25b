// Write-through invalidation through the real proxy and demo backend, for a query whose only
// `__typename` is conditional (`__typename @include(if: $withType)`): with $withType false the
// entity came back without it, the cached entry carried no `Entity:<id>` tag, and a mutation of
// that entity left the entry serving the old name for the whole TTL.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

let backend: DemoBackend
let proxy: TestProxy

async function gql(query: string, variables?: Record<string, unknown>): Promise<{ cache: string | undefined; data: Record<string, { name?: string } | null> }> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query, variables }) })
  const json = (await res.body.json()) as { data: Record<string, { name?: string } | null> }
  return { cache: res.headers['x-cache'] as string | undefined, data: json.data }
}

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

describe('a conditional __typename does not leave entities untagged', () => {
  it.each([
    ['@include(if: false)', 'query Q($t: Boolean!) { entity(id: "$ID") { id name __typename @include(if: $t) } }', { t: false }, '41'],
    ['@skip(if: true)', 'query Q($s: Boolean!) { entity(id: "$ID") { __typename @skip(if: $s) id name } }', { s: true }, '42'],
  ])('%s', async (_name, text, variables, id) => {
    const query = text.replace('$ID', id)
    const first = await gql(query, variables)
    expect(first.cache).toBe('MISS')
    expect((await gql(query, variables)).cache).toBe('HIT')
    const renamed = `Renamed ${id}`
    const m = await gql(`mutation { updateEntity(id: "${id}", name: "${renamed}") { id } }`)
    expect(m.data.updateEntity).toMatchObject({ id })
    const after = await gql(query, variables)
    expect(after.cache).toBe('MISS')
    expect(after.data.entity?.name).toBe(renamed)
  })

  it('an unconditional __typename is not added twice', async () => {
    const query = '{ entity(id: "43") { id name __typename } }'
    expect((await gql(query)).cache).toBe('MISS')
    await gql('mutation { updateEntity(id: "43", name: "Renamed 43") { id } }')
    expect((await gql(query)).data.entity).toEqual({ id: '43', name: 'Renamed 43', __typename: 'Entity' })
  })
})
