// A GET a filter edits (the persisted filter fills in the document) goes upstream with its GraphQL
// parameters rewritten. The client's other parameters were re-serialized with them: `a%20b` went
// as `a+b` (a plus sign to backends that decode with decodeURIComponent), a bare `flag` as
// `flag=`, and bytes that are not UTF-8 (`%E9`) as U+FFFD. They now go as the client spelled them.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const DOC = 'query Small { hello }'
let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"data":{"hello":"hi"}}')
  })
  proxy = await startTestProxy({
    persistedDocuments: { operations: { small: { document: DOC } } },
    routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'persisted' }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

it('an edited GraphQL GET keeps the non-GraphQL query parameters byte for byte', async () => {
  const ext = encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: 'small' } }))
  const others = ['tenant=a%20b', 'flag', 'enc=%E9t%E9', 'x=1+2', 'raw=%zz']
  const res = await request(`${proxy.url}/graphql?${others.slice(0, 3).join('&')}&extensions=${ext}&${others.slice(3).join('&')}`)
  expect(res.statusCode).toBe(200)
  await res.body.text()
  const url = backend.requests[0]!.url!
  const search = url.slice(url.indexOf('?') + 1)
  const kept = `${others.join('&')}&`
  expect(search.slice(0, kept.length)).toBe(kept)
  // The GraphQL parameters are the edited request: the document in, the persisted hash out.
  const params = new URLSearchParams(search)
  expect(params.get('query')).toBe(DOC)
  expect(params.get('extensions') ?? '').not.toContain('persistedQuery')
  expect(params.getAll('extensions').length).toBeLessThanOrEqual(1)
})
