// Relay's persisted queries send `{"doc_id": "…", "variables": {…}}`. A GraphQL route refused it as
// "Must provide query string", and beside a `query` the doc_id went upstream unchecked: a backend
// that reads doc_id first ran a document the safelist never saw. It is now read as GraphQL over
// HTTP's `documentId`: the persisted filter resolves it, and a backend that knows doc_id gets it.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SAFE = 'query Safe { hello }'
const OTHER = 'query Other { secrets }'
let backend: RawBackend
let proxy: TestProxy
const seen: { url: string; body: string }[] = []
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => (body += c))
    req.on('end', () => {
      seen.push({ url: req.url!, body })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"data":{"hello":"hi"}}')
    })
  })
  proxy = await startTestProxy({
    persistedDocuments: { operations: { safe: { document: SAFE }, other: { document: OTHER } } },
    routes: [
      { name: 'safelisted', match: { pathPrefix: '/graphql' }, upstream: backend.url, type: 'graphql', filters: [{ name: 'persisted', safelist: { mode: 'enforce' } }] as never },
      { name: 'plain', match: { pathPrefix: '/plain' }, upstream: backend.url, type: 'graphql', filters: [] },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function post(path: string, body: unknown): Promise<{ status: number; message: string | undefined }> {
  const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const json = (await res.body.json()) as { errors?: { message: string }[] }
  return { status: res.statusCode, message: json.errors?.[0]?.message }
}

it("a Relay doc_id is resolved from the manifest and the backend gets the document", async () => {
  expect(await post('/graphql', { doc_id: 'safe', variables: { n: 1 } })).toEqual({ status: 200, message: undefined })
  expect(JSON.parse(seen.at(-1)!.body)).toMatchObject({ query: SAFE, variables: { n: 1 } })
  expect(JSON.parse(seen.at(-1)!.body)).not.toHaveProperty('doc_id')
  const get = await request(`${proxy.url}/graphql?doc_id=safe`)
  await get.body.text()
  expect(get.statusCode).toBe(200)
  expect(new URLSearchParams(seen.at(-1)!.url.split('?')[1]).get('query')).toBe(SAFE)
})

it('a doc_id beside a safelisted query that names another document is refused, unseen by the backend', async () => {
  const before = seen.length
  const r = await post('/graphql', { query: SAFE, doc_id: 'other' })
  expect(r.status).toBe(400)
  expect(r.message).toMatch(/different documents/)
  expect(seen.length).toBe(before)
})

it('documentId and doc_id together are refused', async () => {
  const r = await post('/plain', { documentId: 'safe', doc_id: 'safe' })
  expect(r.status).toBe(400)
  expect(r.message).toMatch(/"documentId" or by "doc_id", not both/)
})

it('on a route without the persisted filter a doc_id request goes to the backend as sent', async () => {
  const body = { doc_id: 'relay-123', variables: { id: 'x' } }
  expect(await post('/plain', body)).toEqual({ status: 200, message: undefined })
  expect(seen.at(-1)!.body).toBe(JSON.stringify(body))
})
