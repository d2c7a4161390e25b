// node:http keeps the first of several Authorization or Content-Type lines (and a few others) and
// drops the rest, so that is what every filter read; but the proxy relayed all of them. A backend
// that takes the last line or joins them acted on a credential no filter verified, or (GraphQL)
// parsed a JSON body the filters read as a form or multipart body. Only the value read is relayed.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { rawExchange, startRawBackend, echoHandler, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({
    routes: [
      { name: 'graphql', match: { pathPrefix: '/graphql' }, upstream: backend.url, type: 'graphql' },
      { name: 'http', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

/** The backend's raw header lines of one name, in order. */
async function relayed(head: string, body = ''): Promise<(name: string) => string[]> {
  const raw = (await rawExchange(proxy.port, `${head}host: api.example\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)).toString('latin1')
  expect(raw.startsWith('HTTP/1.1 200 ')).toBe(true)
  const rawHeaders = (JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { rawHeaders: string[] }).rawHeaders
  return (name) => rawHeaders.filter((_v, i) => i % 2 === 1 && rawHeaders[i - 1]!.toLowerCase() === name)
}

it('a GraphQL POST with a second Content-Type reaches the backend with the JSON one the route read', async () => {
  // Valid JSON, and as a form it would carry query=mutation{drop}.
  const body = JSON.stringify({ query: '{ hello }', x: '&query=mutation{drop}&' })
  const lines = await relayed('POST /graphql HTTP/1.1\r\ncontent-type: application/json\r\ncontent-type: application/x-www-form-urlencoded\r\n', body)
  expect(lines('content-type')).toEqual(['application/json'])
})

it('a second Authorization (and User-Agent) line is not relayed; other repeated headers still are', async () => {
  const lines = await relayed('GET /x HTTP/1.1\r\nauthorization: Bearer verified\r\nAuthorization: Bearer other\r\nuser-agent: a\r\nuser-agent: b\r\naccept: text/html\r\naccept: application/json\r\n')
  expect(lines('authorization')).toEqual(['Bearer verified'])
  expect(lines('user-agent')).toEqual(['a'])
  expect(lines('accept')).toEqual(['text/html', 'application/json'])
})
