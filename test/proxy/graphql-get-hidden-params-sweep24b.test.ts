// GraphQL over HTTP sends a GET's `variables` and `extensions` as JSON-encoded parameters, and that
// is all the filters read. Backends built on qs (Express 4), Rack or PHP also build them from
// brackets (`extensions[persistedQuery][sha256Hash]=…`, `variables[id]=…`), Rack 2 and old Python
// parse_qs split pairs at `;` too, and ASP.NET reads `Query` as `query`: such a request reached the
// backend with an APQ id, variables or a `query` no filter saw — a GET with only such parameters
// went by as no GraphQL request at all, past an enforced safelist. They are now a 400 GraphQL error.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, echoHandler, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const DOC = 'query Small { hello }'
let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    persistedDocuments: { operations: { small: { document: DOC } } },
    routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', filters: [{ name: 'persisted', safelist: { mode: 'enforce' } }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const q = encodeURIComponent(DOC)

it.each([
  ['an APQ id in brackets alone', 'extensions[persistedQuery][version]=1&extensions[persistedQuery][sha256Hash]=abc', 'extensions[persistedQuery][version]'],
  ['percent-encoded brackets', `query=${q}&variables%5Bid%5D=1`, 'variables[id]'],
  ['a bracketed variable beside the JSON-less query', `query=${q}&variables[id]=1`, 'variables[id]'],
  ['a second query after a ";"', `query=${q}&x=1;query=mutation%7Bdrop%7D`, 'query'],
  ['a documentId after a ";"', `x=1;documentId=other`, 'documentId'],
  ['a query spelled in another case alone', 'Query=%7Banything%7D', 'Query'],
  ['an operationName spelled in another case', `query=${q}&OPERATIONNAME=Small`, 'OPERATIONNAME'],
])('a GET with %s is refused 400, unseen by the backend', async (_what, search, named) => {
  const before = backend.requests.length
  const res = await request(`${proxy.url}/graphql?${search}`)
  const body = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
  expect(res.statusCode).toBe(400)
  expect(body.errors[0]!.extensions.code).toBe('BAD_REQUEST')
  expect(body.errors[0]!.message).toContain(`"${named}"`)
  expect(backend.requests.length).toBe(before)
})

it('a POST whose URL carries a bracketed GraphQL parameter is refused', async () => {
  const before = backend.requests.length
  const res = await request(`${proxy.url}/graphql?extensions[persistedQuery][sha256Hash]=abc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: DOC }) })
  const body = (await res.body.json()) as { errors: { message: string }[] }
  expect(res.statusCode).toBe(400)
  expect(body.errors[0]!.message).toContain('extensions[persistedQuery][sha256Hash]')
  expect(backend.requests.length).toBe(before)
})

it('JSON-encoded parameters, other bracketed parameters and an encoded ";" still pass', async () => {
  const vars = encodeURIComponent(JSON.stringify({ s: 'a;query=b' }))
  const res = await request(`${proxy.url}/graphql?query=${q}&variables=${vars}&filter[x]=1&y=1;z=2`)
  const seen = (await res.body.json()) as { url: string }
  expect(res.statusCode).toBe(200)
  expect(seen.url).toContain('filter[x]=1&y=1;z=2')
})
