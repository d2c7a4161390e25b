// A mutation answered as a multipart incremental delivery (`@defer` in a mutation) is read part by
// part for the entities it returned, as a JSON result is: it invalidates those (the initial part's
// and the deferred parts'), not the route's whole cache. Read as one JSON document it failed to
// parse, and every such mutation dropped all the route's entries. A stream that is not complete
// (no `hasNext: false`) or reports errors in a later part still drops them.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const part = (json: unknown) => `\r\n---\r\ncontent-type: application/json; charset=utf-8\r\n\r\n${JSON.stringify(json)}`
const user = (id: string) => ({ __typename: 'User', id, name: `u${id}` })
const initial = { data: { updateUser: user('1') }, hasNext: true }

/** The multipart bodies the backend answers mutations with, by scenario. */
const ANSWERS: Record<string, string> = {
  complete: part(initial) + part({}) + part({ incremental: [{ data: { friends: [user('3')] }, path: ['updateUser'] }], hasNext: false }) + '\r\n-----\r\n',
  unfinished: part(initial) + '\r\n-----\r\n',
  laterErrors: part(initial) + part({ incremental: [{ data: { friends: null }, errors: [{ message: 'boom', path: ['updateUser', 'friends'] }], path: ['updateUser'] }], hasNext: false }) + '\r\n-----\r\n',
}

describe('cache: a mutation answered as a multipart stream', () => {
  let backend: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      if (req.method === 'GET') {
        req.resume()
        const id = /user\(id: (\d+)\)/.exec(new URL(req.url!, 'http://x').searchParams.get('query')!)![1]!
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { user: user(id) } }))
        return
      }
      let body = ''
      req.on('data', (c: Buffer) => (body += c.toString()))
      req.on('end', () => {
        const scenario = (JSON.parse(body) as { operationName: string }).operationName
        res.writeHead(200, { 'content-type': 'multipart/mixed; boundary="-"; deferSpec=20220824' }).end(ANSWERS[scenario])
      })
    })
    proxy = await startTestProxy({
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 60 }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const query = async (id: string) => {
    const res = await request(`${proxy.url}/graphql?query=${encodeURIComponent(`{ user(id: ${id}) { id name } }`)}`)
    await res.body.text()
    return res.headers['x-cache']
  }
  const mutate = async (scenario: string) => {
    const res = await request(`${proxy.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'multipart/mixed;deferSpec=20220824,application/json' },
      body: JSON.stringify({ operationName: scenario, query: `mutation ${scenario} { updateUser(id: 1) { id name ... @defer { friends { id name } } } }` }),
    })
    expect(res.statusCode).toBe(200)
    return res.body.text()
  }
  const fill = async () => {
    for (const id of ['1', '2', '3']) await query(id)
    for (const id of ['1', '2', '3']) expect(await query(id)).toBe('HIT')
  }

  it('invalidates the entities of every part, and keeps the rest', async () => {
    await fill()
    expect(await mutate('complete')).toBe(ANSWERS.complete)
    expect(await query('1')).toBe('MISS') // in the initial part
    expect(await query('3')).toBe('MISS') // in a deferred part
    expect(await query('2')).toBe('HIT') // untouched
  })

  it('drops the route when the stream is unfinished or a later part failed', async () => {
    for (const scenario of ['unfinished', 'laterErrors']) {
      await fill()
      await mutate(scenario)
      expect(await query('2')).toBe('MISS')
    }
  })
})
