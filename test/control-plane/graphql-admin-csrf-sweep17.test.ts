// /graphql is held to what the REST API does with browsers: no CORS headers, and POST bodies only
// in types a page on another origin cannot send without a preflight. Before, yoga's defaults
// answered any Origin with `access-control-allow-origin: <that origin>` and
// `access-control-allow-credentials: true`, and ran mutations sent as an HTML form
// (application/x-www-form-urlencoded: no preflight). Behind a proxy that turns a session cookie
// into the bearer token (oauth2-proxy and the like), any page the admin visited could commit a
// quota change and read the answer. Real control plane over SQLite; the bearer token stands for
// what such a proxy adds.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
})
afterAll(async () => {
  await cp?.close()
})

const head = async () => ((await (await cp.api('/v1/config')).json()) as { version: number }).version

describe('GraphQL admin and cross-origin browsers (sweep 17)', () => {
  it('a mutation posted as an HTML form is refused with 415 and a GraphQL error body; nothing is committed', async () => {
    const before = await head()
    const form = new URLSearchParams({ query: 'mutation { setQuota(kind: "graphql", limitPerDay: 1, tenant: "acme") { limitPerDay } }' }).toString()
    const r = await cp.api('/graphql', { method: 'POST', body: form, headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://elsewhere.example' } })
    expect(r.status).toBe(415)
    expect(r.headers.get('access-control-allow-origin')).toBeNull()
    expect(await r.json()).toEqual({ errors: [{ message: 'expected a JSON body (content-type: application/json), got "application/x-www-form-urlencoded"', extensions: { code: 'UNSUPPORTED_MEDIA_TYPE' } }] })
    expect(await head()).toBe(before)
    expect(((await (await cp.api('/v1/tenants/acme/quotas')).json()) as { items: unknown[] }).items).toEqual([])
  })

  it('text/plain (the other body type a form sends) is a 415 that says why, not an empty answer', async () => {
    const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: '{ __typename }' }), headers: { 'content-type': 'text/plain' } })
    expect(r.status).toBe(415)
    expect(r.headers.get('content-type')).toMatch(/^application\/(graphql-response\+)?json/)
    expect(await r.json()).toMatchObject({ errors: [{ message: 'expected a JSON body (content-type: application/json), got "text/plain"', extensions: { code: 'UNSUPPORTED_MEDIA_TYPE' } }] })
  })

  it('no CORS headers for another origin, as on the REST API', async () => {
    const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: '{ __typename }' }), headers: { origin: 'https://elsewhere.example' } })
    expect(r.status).toBe(200)
    expect(await r.json()).toEqual({ data: { __typename: 'Query' } })
    expect(r.headers.get('access-control-allow-origin')).toBeNull()
    expect(r.headers.get('access-control-allow-credentials')).toBeNull()
    const get = await cp.api(`/graphql?query=${encodeURIComponent('{ __typename }')}`, { headers: { origin: 'https://elsewhere.example' } })
    expect(get.status).toBe(200)
    expect(get.headers.get('access-control-allow-origin')).toBeNull()
    await get.text()
  })

  it('JSON (with a charset or a +json type) and application/graphql bodies still work', async () => {
    const mutation = 'mutation { setQuota(kind: "ingest", limitPerDay: 5, tenant: "acme") { limitPerDay } }'
    const json = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: mutation }), headers: { 'content-type': 'application/json; charset=utf-8' } })
    expect(await json.json()).toEqual({ data: { setQuota: { limitPerDay: 5 } } })
    const plusJson = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: '{ __typename }' }), headers: { 'content-type': 'application/graphql+json' } })
    expect(await plusJson.json()).toEqual({ data: { __typename: 'Query' } })
    const sdl = await cp.api('/graphql', { method: 'POST', body: '{ quotas(tenant: "acme") { kind limitPerDay } }', headers: { 'content-type': 'application/graphql' } })
    expect(((await sdl.json()) as { data: { quotas: unknown[] } }).data.quotas).toContainEqual({ kind: 'ingest', limitPerDay: 5 })
  })
})
