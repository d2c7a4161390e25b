// The media type of an error reply follows the client's Accept, and media types are
// case-insensitive (RFC 9110 §8.3.1): `application/GraphQL-Response+JSON` got application/json.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((_req, res) => res.end('{}'))
  proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function malformed(accept: string): Promise<string | undefined> {
  const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', accept }, body: '{"query":' })
  await r.body.dump()
  expect(r.statusCode).toBe(400)
  return r.headers['content-type'] as string | undefined
}

describe('error replies and the case of Accept', () => {
  it('answers application/graphql-response+json to a client naming it in any case', async () => {
    expect(await malformed('application/graphql-response+json')).toMatch(/^application\/graphql-response\+json/)
    expect(await malformed('application/GraphQL-Response+JSON')).toMatch(/^application\/graphql-response\+json/)
    expect(await malformed('Application/Graphql-Response+Json;q=1, application/json;q=0.5')).toMatch(/^application\/graphql-response\+json/)
    // Still the client's ranking, whatever the case.
    expect(await malformed('APPLICATION/GRAPHQL-RESPONSE+JSON;q=0.2, application/json')).toMatch(/^application\/json/)
  })
})
