// An operation whose admission was still running when its socket closed was logged as `stopped`
// (the client's complete) instead of `closed` (the socket closed under it), the access line's
// outcome meant to tell the two apart. Real WorkerProxy with a filter the test holds, raw ws clients.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { filterModules, type FilterModules } from '../../../filters/registry.ts'
import type { Filter } from '../../../proxy/filter.ts'
import { ProxyMetrics } from '../../../proxy/metrics.ts'
import { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { LogCapture } from '../../helpers/proxy.ts'
import { RawClient } from './clients.ts'

describe('an operation whose admission is running when it ends', () => {
  const held: (() => void)[] = []
  const logs = new LogCapture()
  let proxy: WorkerProxy
  let url: string
  beforeAll(async () => {
    const gate: Filter = { name: 'gate', onRequest: (ctx) => (ctx.subscription === undefined ? undefined : new Promise<undefined>((r) => held.push(() => r(undefined)))) }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => gate } }
    const config = validateConfig({
      log: { level: 'info' },
      routes: [{ name: 'subs', upstream: 'http://127.0.0.1:9', websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }],
    })
    proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    url = `ws://127.0.0.1:${(proxy.server.address() as AddressInfo).port}/graphql`
  })
  afterAll(async () => {
    for (const r of held.splice(0)) r()
    await proxy?.drain(500)
  })

  const line = (opId: string) => logs.find('access').find((l) => l.method === 'WS' && l.opId === opId)

  it('is `closed` when its socket closed, `stopped` when the client completed it', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'subscribe', id: 'done-by-client', payload: { query: 'subscription { a }' } })
    c.send({ type: 'subscribe', id: 'cut', payload: { query: 'subscription { b }' } })
    await expect.poll(() => held.length, { timeout: 5_000 }).toBe(2)
    c.send({ type: 'complete', id: 'done-by-client' })
    c.ws.close()
    await c.closed()
    // the gateway has seen the close before the admissions go on
    await expect.poll(() => proxy.subscriptions.connections.size, { timeout: 5_000 }).toBe(0)
    for (const r of held.splice(0)) r()
    await expect.poll(() => line('cut'), { timeout: 5_000 }).toBeDefined()
    await expect.poll(() => line('done-by-client'), { timeout: 5_000 }).toBeDefined()
    expect(line('cut')).toMatchObject({ outcome: 'closed', status: 499 })
    expect(line('done-by-client')).toMatchObject({ outcome: 'stopped', status: 499 })
  })
})
