// A JSON object that names a member twice reads as the last value to JSON.parse (the proxy's
// filters) and as the first to gjson, jsonparser and other first-match readers a backend may use.
// `{"query":"mutation{…}","query":"{ safe }"}` went past an enforced safelist as the safe query
// and reached the backend byte for byte; a repeated variable did the same to anything that reads
// variables. Such a body (or a GET's JSON parameter) is now refused 400, unseen by the backend.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { request } from 'undici'
import { startRecordingBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SAFE = 'query Safe { hello }'
let backend: RawBackend
let proxy: TestProxy
const bodies: string[] = []
beforeAll(async () => {
  backend = await startRecordingBackend(bodies, () => '{"data":{"hello":"hi"}}')
  proxy = await startTestProxy({
    persistedDocuments: { operations: { safe: { document: SAFE } } },
    routes: [{ name: 'graphql', upstream: backend.url, type: 'graphql', batching: { enabled: true }, filters: [{ name: 'persisted', safelist: { mode: 'enforce' } }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function post(body: string): Promise<{ status: number; message: string | undefined }> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
  const json = (await res.body.json()) as { errors?: { message: string; extensions: { code: string } }[] }
  return { status: res.statusCode, message: json.errors?.[0]?.message }
}

it.each([
  ['a repeated query (the safelisted one last)', `{"query":"mutation { dropAll }","query":${JSON.stringify(SAFE)}}`, '"query"'],
  ['a repeated variable', `{"query":${JSON.stringify(SAFE)},"variables":{"tenant":"other","tenant":"mine"}}`, '"tenant"'],
  ['a repeated name spelled with an escape', `{"query":${JSON.stringify(SAFE)},"extensions":{"x":1,"\\u0078":2}}`, '"x"'],
  ['a repeated member in a batch item', `[{"query":${JSON.stringify(SAFE)}},{"operationName":"Evil","query":${JSON.stringify(SAFE)},"operationName":"Safe"}]`, '"operationName"'],
])('a POST body with %s is refused 400, unseen by the backend', async (_what, body, named) => {
  const before = bodies.length
  const r = await post(body)
  expect(r.status).toBe(400)
  expect(r.message).toContain(`repeats the member ${named}`)
  expect(bodies.length).toBe(before)
})

it('a GET whose variables repeat a member is refused 400', async () => {
  const before = bodies.length
  const vars = encodeURIComponent('{"id":"1","id":"2"}')
  const res = await request(`${proxy.url}/graphql?query=${encodeURIComponent(SAFE)}&variables=${vars}`)
  const json = (await res.body.json()) as { errors: { message: string }[] }
  expect(res.statusCode).toBe(400)
  expect(json.errors[0]!.message).toContain('"variables" parameter repeats the member "id"')
  expect(bodies.length).toBe(before)
})

it('names that only look alike, and colons and quotes inside strings, pass as sent', async () => {
  const variables = `{"a":"x\\":y","a\\\\":"\\\\","b":{"a":1},"c":[{"a":2},{"a":3}],"Ä":1,"ä":2}`
  expect(await post(`{ "query" : ${JSON.stringify(SAFE)}, "variables": ${variables} }`)).toEqual({ status: 200, message: undefined })
  expect((JSON.parse(bodies.at(-1)!) as { variables: unknown }).variables).toEqual(JSON.parse(variables))
})
