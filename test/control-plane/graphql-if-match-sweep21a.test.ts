// The GraphQL admin mutations had no optimistic concurrency (REST has If-Match/ETag): two admins
// editing one quota through GraphQL overwrote each other in silence. Now `ifMatch` takes REST's
// ETags with REST's semantics, and a stale one is a PRECONDITION_FAILED error that writes nothing.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
}, 60_000)
afterAll(async () => {
  await cp?.close()
})

type Gql = { data?: Record<string, unknown> | null; errors?: { message: string; extensions: Record<string, unknown> }[] }
const gql = async (query: string, variables: Record<string, unknown> = {}): Promise<Gql> => (await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query, variables }) })).json() as Promise<Gql>
const SET_QUOTA = 'mutation($limit: Int!, $ifMatch: String) { setQuota(tenant: "acme", kind: "graphql", limitPerDay: $limit, ifMatch: $ifMatch) { limitPerDay etag } }'
const SET_PRESET = 'mutation($preset: String!, $tenant: String, $ifMatch: String) { setDlpPreset(preset: $preset, tenant: $tenant, ifMatch: $ifMatch) }'

it('setQuota: two admins with the same ETag — the second is refused and the first one’s limit stays', async () => {
  expect((await gql(SET_QUOTA, { limit: 100 })).errors).toBeUndefined()
  const read = await gql('{ quotas(tenant: "acme") { kind limitPerDay etag } }')
  const q = (read.data!.quotas as { kind: string; etag: string }[]).find((x) => x.kind === 'graphql')!
  // The ETag is REST's for the same quota.
  const rest = await cp.api('/v1/tenants/acme/quotas/graphql')
  expect(rest.headers.get('etag')).toBe(q.etag)

  const first = await gql(SET_QUOTA, { limit: 200, ifMatch: q.etag })
  expect(first.errors).toBeUndefined()
  const version = cp.store.head()!.version
  const second = await gql(SET_QUOTA, { limit: 300, ifMatch: q.etag })
  expect(second.errors![0]!.extensions).toMatchObject({ code: 'PRECONDITION_FAILED', current: (first.data!.setQuota as { etag: string }).etag })
  expect(cp.store.head()!.version).toBe(version)
  expect((await (await cp.api('/v1/tenants/acme/quotas/graphql')).json()) as unknown).toMatchObject({ limitPerDay: 200 })

  // With the current ETag (or *) it is written; a malformed one is the caller's input, as REST's 400.
  expect((await gql(SET_QUOTA, { limit: 300, ifMatch: (first.data!.setQuota as { etag: string }).etag })).data).toMatchObject({ setQuota: { limitPerDay: 300 } })
  expect((await gql(SET_QUOTA, { limit: 301, ifMatch: '*' })).data).toMatchObject({ setQuota: { limitPerDay: 301 } })
  expect((await gql(SET_QUOTA, { limit: 302, ifMatch: 'W/*' })).errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT', problems: [expect.stringMatching(/^ifMatch: /)] })
  // `*` on a quota not set yet: it does not exist.
  const absent = await gql('mutation { setQuota(tenant: "acme", kind: "ingest", limitPerDay: 5, ifMatch: "*") { limitPerDay } }')
  expect(absent.errors![0]!.extensions.code).toBe('PRECONDITION_FAILED')
})

it('setDlpPreset: ifMatch is the ETag of REST’s dlp-tenants entry (or of the dlp section without a tenant)', async () => {
  expect((await gql(SET_PRESET, { preset: 'mask_basic', tenant: 'acme' })).errors).toBeUndefined()
  const etag = (await cp.api('/v1/dlp-tenants/acme')).headers.get('etag')!
  expect((await gql(SET_PRESET, { preset: 'tokenize_strict', tenant: 'acme', ifMatch: etag })).errors).toBeUndefined()
  const stale = await gql(SET_PRESET, { preset: 'mask_basic', tenant: 'acme', ifMatch: etag })
  expect(stale.errors![0]!.extensions).toMatchObject({ code: 'PRECONDITION_FAILED', current: (await cp.api('/v1/dlp-tenants/acme')).headers.get('etag') })
  expect((await (await cp.api('/v1/dlp-tenants/acme')).json()) as unknown).toMatchObject({ config: { preset: 'tokenize_strict' } })

  const section = (await cp.api('/v1/dlp')).headers.get('etag')!
  expect((await gql(SET_PRESET, { preset: 'mask_basic', ifMatch: section })).errors).toBeUndefined()
  expect((await gql(SET_PRESET, { preset: 'tokenize_strict', ifMatch: section })).errors![0]!.extensions.code).toBe('PRECONDITION_FAILED')
  expect(((await (await cp.api('/v1/dlp')).json()) as { config: { defaultPreset: string } }).config.defaultPreset).toBe('mask_basic')
})
