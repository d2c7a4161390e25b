// A terminate-mode (subscription hub) handshake named its access line and context by the
// client's x-request-id whatever the route's request-id filter said: a renamed header
// (`header: x-correlation-id`) was not read, and `trustIncoming: false` did not stop a client
// choosing the id its connection is logged under, as it does over HTTP and in passthrough.
// A real proxy and real ws clients; the access line of each handshake is read.
import { once } from 'node:events'
import { afterEach, expect, it } from 'vitest'
import WebSocket from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let p: TestProxy | undefined
afterEach(async () => {
  await p?.close()
  p = undefined
})

async function handshake(headers: Record<string, string>): Promise<Record<string, unknown>> {
  const ws = new WebSocket(`ws://127.0.0.1:${p!.port}/graphql`, 'graphql-transport-ws', { headers })
  await once(ws, 'open')
  ws.close()
  await once(ws, 'close')
  let line: Record<string, unknown> | undefined
  await expect.poll(() => (line = p!.logs.find('access').find((l) => l.status === 101 && !seen.has(l))), { timeout: 10_000 }).toBeDefined()
  seen.add(line!)
  return line!
}
const seen = new Set<Record<string, unknown>>()

it('reads the id from the filter’s own header, and never from the client when it is not trusted', async () => {
  p = await startTestProxy({ routes: [{ name: 'gql', upstream: 'http://127.0.0.1:9', websocket: { mode: 'terminate' }, filters: [{ name: 'request-id', header: 'x-correlation-id', trustIncoming: true }] }] })
  expect((await handshake({ 'x-correlation-id': 'corr-1', 'x-request-id': 'other-2' })).reqId).toBe('corr-1')
  await p.close()
  p = await startTestProxy({ routes: [{ name: 'gql', upstream: 'http://127.0.0.1:9', websocket: { mode: 'terminate' }, filters: [{ name: 'request-id', trustIncoming: false }] }] })
  const id = (await handshake({ 'x-request-id': 'chosen-by-client' })).reqId
  expect(id).not.toBe('chosen-by-client')
})
