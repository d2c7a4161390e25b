// The access line of a batched GraphQL request (sweep 30v): it named no operation (`op` came only
// from a lone request), so what batching clients ran was not in the log.
import { request } from 'undici'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url, batching: { enabled: true } }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

async function post(body: unknown): Promise<string> {
  const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  await res.body.dump()
  expect(res.statusCode).toBe(200)
  return res.headers['x-request-id'] as string
}

it("names a batch's operations in `op`, clipped as a lone name is, and its size in `batch`", async () => {
  const long = 'L'.repeat(200)
  const ids = [
    await post([{ query: 'query A { a }' }, { query: '{ b }' }, { query: 'query X { c } query C { c }', operationName: 'C' }]),
    await post([{ query: `query ${long} { a }` }, { query: 'query B { b }' }]),
    await post([{ query: '{ a }' }, { query: '{ b }' }]),
  ]
  const line = (id: string) => proxy.logs.find('access').find((l) => l.reqId === id)
  await expect.poll(() => ids.every((id) => line(id) !== undefined), { timeout: 3_000 }).toBe(true)
  expect(line(ids[0]!)).toMatchObject({ op: 'A,,C', batch: 3, status: 200 })
  expect(line(ids[1]!)).toMatchObject({ op: `${'L'.repeat(128)}…`, batch: 2 })
  expect(line(ids[2]!)!.op).toBeUndefined()
  expect(line(ids[2]!)!.batch).toBe(2)
})
