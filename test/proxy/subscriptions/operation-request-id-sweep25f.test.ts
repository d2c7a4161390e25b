// Every operation over a terminated socket carries its connection's request id (the upgrade's,
// which its 101 access line is logged under): an operation refused before the chain (no request
// context yet: a legacy `start` before connection_init) had no reqId at all, and one admitted on a
// route without a request-id filter had none either, so neither joined its connection's line.
// Real igw, raw ws clients; the access lines are read.
import { afterEach, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { RawClient } from './clients.ts'

let p: TestProxy | undefined
afterEach(async () => {
  await p?.close()
  p = undefined
})

const Q = 'query { __typename }'

async function opLine(opId: string): Promise<Record<string, unknown>> {
  let line: Record<string, unknown> | undefined
  await expect.poll(() => (line = p!.logs.find('access').find((l) => l.method === 'WS' && l.opId === opId)), { timeout: 5_000 }).toBeDefined()
  return line!
}

it('logs an operation refused before the chain under the upgrade\'s request id', async () => {
  p = await startTestProxy({ routes: [{ name: 'gql', upstream: 'http://127.0.0.1:9', websocket: { mode: 'terminate' }, filters: [{ name: 'request-id', header: 'x-correlation-id', trustIncoming: true }] }] })
  const c = await RawClient.open(`ws://127.0.0.1:${p.port}/graphql`, ['graphql-ws'], { 'x-correlation-id': 'conn-corr-1' })
  try {
    c.send({ type: 'start', id: 'early', payload: { query: Q } })
    const line = await opLine('early')
    expect(line).toMatchObject({ outcome: 'refused', code: 'BAD_REQUEST' })
    expect(line.reqId).toBe('conn-corr-1')
  } finally {
    c.end()
  }
})

it('logs an operation of a route without a request-id filter under the upgrade\'s x-request-id', async () => {
  p = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'gql', upstream: 'http://127.0.0.1:9', websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }] } as never)
  const c = await RawClient.open(`ws://127.0.0.1:${p.port}/graphql`, ['graphql-transport-ws'], { 'x-request-id': 'conn-rid-2' })
  try {
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'nobody' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'subscribe', id: 'q1', payload: { query: Q } })
    const line = await opLine('q1')
    expect(line.outcome).toBe('refused')
    expect(line.reqId).toBe('conn-rid-2')
    // the same id as the connection's own 101 line
    expect(p.logs.find('access').find((l) => l.status === 101)?.reqId).toBe('conn-rid-2')
  } finally {
    c.end()
  }
})
