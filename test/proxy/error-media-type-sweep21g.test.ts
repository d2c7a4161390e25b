// GraphQL over HTTP §7.1: a server encodes its response in the media type the client ranks
// highest. The gateway's own error replies were always application/json, even to a client that
// asked for application/graphql-response+json alone (or first, as Apollo Client 3.8+ does), where
// graphql-yoga and Apollo Router answer in that type. Through a real igw and real backends.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const GRAPHQL_RESPONSE = 'application/graphql-response+json; charset=utf-8'
const JSON_TYPE = 'application/json; charset=utf-8'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"data":{"a":1}}')
  })
  proxy = await startTestProxy({
    mode: 'ingress',
    routes: [
      { name: 'gql', match: { pathPrefix: '/graphql' }, upstream: backend.url, type: 'graphql' },
      { name: 'down', match: { pathPrefix: '/down' }, upstream: 'http://127.0.0.1:9', type: 'graphql' },
    ],
  } as never)
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function malformed(accept: string | undefined, path = '/graphql'): Promise<{ status: number; type: unknown; code: string }> {
  const res = await request(`${proxy.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(accept === undefined ? {} : { accept }) },
    body: path === '/graphql' ? '{"query":' : '{"query":"{a}"}',
  })
  const body = (await res.body.json()) as { errors: { extensions: { code: string } }[] }
  return { status: res.statusCode, type: res.headers['content-type'], code: body.errors[0]!.extensions.code }
}

describe('error replies in the media type the client accepts', () => {
  it('a client that accepts only application/graphql-response+json gets its errors in that type', async () => {
    expect(await malformed('application/graphql-response+json')).toEqual({ status: 400, type: GRAPHQL_RESPONSE, code: 'BAD_REQUEST' })
  })

  it("Apollo Client's Accept (graphql-response+json first, application/json at q=0.9) gets graphql-response+json", async () => {
    expect((await malformed('application/graphql-response+json,application/json;q=0.9')).type).toBe(GRAPHQL_RESPONSE)
    // The upstream failing is answered in the same type.
    expect(await malformed('application/graphql-response+json, application/json;q=0.9', '/down')).toEqual({ status: 502, type: GRAPHQL_RESPONSE, code: 'UPSTREAM_UNAVAILABLE' })
  })

  it('a request refused before routing (no route) is answered in the accepted type too', async () => {
    const res = await request(`${proxy.url}/nowhere`, { headers: { accept: 'application/graphql-response+json' } })
    expect(res.statusCode).toBe(404)
    expect(res.headers['content-type']).toBe(GRAPHQL_RESPONSE)
    await res.body.dump()
  })

  it('application/json stays the answer without Accept, for wildcards, and when application/json ranks higher or first', async () => {
    expect((await malformed(undefined)).type).toBe(JSON_TYPE)
    expect((await malformed('*/*')).type).toBe(JSON_TYPE)
    expect((await malformed('application/json')).type).toBe(JSON_TYPE)
    expect((await malformed('application/json, application/graphql-response+json')).type).toBe(JSON_TYPE)
    expect((await malformed('application/graphql-response+json;q=0.5, application/json')).type).toBe(JSON_TYPE)
    expect((await malformed('application/graphql-response+json;q=0, text/html')).type).toBe(JSON_TYPE)
  })

  it("a backend's own answer keeps the type it has", async () => {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' }, body: '{"query":"{a}"}' })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toBe('application/json')
    await res.body.dump()
  })
})
