// The subscription hub's filter chain over a terminated socket (sweep 18):
// - a filter whose onSubscriptionEvent throws, with failMode open, lets the event through
//   unchanged (counted in igw_filter_errors_total) instead of withholding it;
// - a live subscription keeps the onSubscriptionEvent filters it was admitted with across a reload
//   that removes or changes its route (before: the current snapshot's chain decided, so a removed
//   route or a chain without the masking filter let every event through unfiltered); the retired
//   filters are closed once the last subscription holding them ends;
// - every operation over the socket writes one access line when it ends, as HTTP requests do.
// Real WorkerProxy, the real hub, a real graphql-ws backend, real graphql-ws / ws clients.
import { afterEach, describe, expect, it } from 'vitest'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { validateConfig } from '../../../config/load.ts'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { filterModules, type FilterModules } from '../../../filters/registry.ts'
import type { Filter, StreamEvent } from '../../../proxy/filter.ts'
import { ProxyMetrics } from '../../../proxy/metrics.ts'
import { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { LogCapture } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient } from './clients.ts'

interface Started {
  proxy: WorkerProxy
  url: string
  logs: LogCapture
}

async function start(doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>, modules: FilterModules = filterModules): Promise<Started> {
  const config = validateConfig({ log: { level: 'info' }, subscriptions: { upstream: { lingerMs: 0 } }, ...doc } as never)
  const logs = new LogCapture()
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  return { proxy, url: `ws://127.0.0.1:${(proxy.server.address() as AddressInfo).port}/graphql`, logs }
}

const note = (ev: StreamEvent): string | null => (ev.payload as { data: { events: { note: string | null } } }).data.events.note

describe('subscription filter chain (sweep 18)', () => {
  const cleanup: (() => Promise<unknown> | unknown)[] = []
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f()
  })

  /** A backend of the test's own (a stream another test left lingering never counts here). */
  async function backend(): Promise<SubscriptionBackend> {
    const be = await startSubscriptionBackend()
    cleanup.unshift(() => be.close())
    return be
  }

  it('a throwing onSubscriptionEvent filter with failMode open delivers the event unchanged and counts the error', async () => {
    const b = await backend()
    const boom: Filter = {
      name: 'boom',
      onSubscriptionEvent(_ctx, ev) {
        if (note(ev) === 'boom') throw new Error('filter bug')
        return undefined
      },
    }
    const s = await start(
      { routes: [{ name: 'subs', upstream: b.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id', failMode: 'open' }] }] } as never,
      { ...filterModules, 'request-id': { create: () => boom } } as FilterModules,
    )
    cleanup.push(() => s.proxy.drain(500))
    const c = new GqlClient(s.url)
    cleanup.push(() => c.dispose())
    const { received } = c.subscribe(EVENTS('open-1'))
    await expect.poll(() => b.active(), { timeout: 10_000 }).toBe(1)
    b.publish('open-1', { note: 'a' })
    b.publish('open-1', { note: 'boom' })
    b.publish('open-1', { note: 'c' })
    await received.wait((r) => r.events.length >= 3, 10_000, 'three events')
    expect(received.events.map((p) => p.data!.events!.note)).toEqual(['a', 'boom', 'c'])
    const text = await s.proxy.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
    expect(text).toContain('igw_filter_errors_total{filter="boom"} 1')
  })

  it('a filter failing on every event logs one error line per interval, not one per event (each is counted)', async () => {
    const b = await backend()
    const boom: Filter = {
      name: 'boom',
      onSubscriptionEvent(_ctx, ev) {
        if (note(ev) === 'boom') throw new Error('filter bug')
        return undefined
      },
    }
    // failMode closed (the default): the failing events are withheld
    const s = await start(
      { routes: [{ name: 'subs', upstream: b.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }] } as never,
      { ...filterModules, 'request-id': { create: () => boom } } as FilterModules,
    )
    cleanup.push(() => s.proxy.drain(500))
    const c = new GqlClient(s.url)
    cleanup.push(() => c.dispose())
    const { received } = c.subscribe(EVENTS('flood-1'))
    await expect.poll(() => b.active(), { timeout: 10_000 }).toBe(1)
    for (let i = 0; i < 20; i++) b.publish('flood-1', { note: 'boom' })
    b.publish('flood-1', { note: 'last' })
    await received.wait((r) => r.events.length >= 1, 10_000, 'the last event')
    expect(received.events.map((p) => p.data!.events!.note)).toEqual(['last'])
    const text = await s.proxy.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
    expect(text).toContain('igw_filter_errors_total{filter="boom"} 20')
    expect(s.logs.lines.filter((l) => String(l.msg).startsWith('onSubscriptionEvent failed'))).toHaveLength(1)
  })

  for (const change of ['removed', 'changed'] as const) {
    it(`a live subscription keeps its event filters when a reload ${change} its route; they close when it ends`, async () => {
      const b = await backend()
      const instances: { closed: boolean }[] = []
      const modules = {
        ...filterModules,
        'request-id': {
          create: () => {
            const state = { closed: false }
            instances.push(state)
            const mask: Filter = {
              name: 'mask',
              onSubscriptionEvent: (_ctx, ev) => (note(ev) === 'secret' ? { status: 403, body: 'withheld' } : undefined),
              close: () => void (state.closed = true),
            }
            return mask
          },
        },
      } as FilterModules
      const routeV1 = { name: 'subs', upstream: b.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }
      const s = await start({ routes: [routeV1] } as never, modules)
      cleanup.push(() => s.proxy.drain(500))
      const ch = `reload-${change}`
      const c = new GqlClient(s.url)
      cleanup.push(() => c.dispose())
      const { received } = c.subscribe(EVENTS(ch))
      await expect.poll(() => b.active(), { timeout: 10_000 }).toBe(1)
      b.publish(ch, { note: 'one' })
      b.publish(ch, { note: 'secret' })
      b.publish(ch, { note: 'two' })
      await received.wait((r) => r.events.length >= 2, 10_000, 'two events')
      expect(instances).toHaveLength(1)

      const routeV2 =
        change === 'removed'
          ? { name: 'elsewhere', match: { pathPrefix: '/other' }, upstream: b.url, filters: [] }
          : { ...routeV1, filters: [] }
      await s.proxy.apply(2, validateConfig({ log: { level: 'info' }, subscriptions: { upstream: { lingerMs: 0 } }, routes: [routeV2] } as never))
      b.publish(ch, { note: 'secret' })
      b.publish(ch, { note: 'three' })
      await received.wait((r) => r.events.some((p) => p.data!.events!.note === 'three'), 10_000, 'the event after the reload')
      expect(received.events.map((p) => p.data!.events!.note)).toEqual(['one', 'two', 'three'])
      // The retired chain is still in use: not closed under the subscription.
      expect(instances[0]!.closed).toBe(false)
      await c.dispose()
      await expect.poll(() => instances[0]!.closed, { timeout: 10_000 }).toBe(true)
    })
  }

  it('writes one access line per operation over a terminated socket when it ends', async () => {
    const b = await backend()
    const s = await start({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: b.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }, { name: 'tenant' }] }],
    } as never)
    cleanup.push(() => s.proxy.drain(500))
    const c = await RawClient.open(`${s.url}?x=secret`, ['graphql-transport-ws'], { 'x-request-id': 'rid-1234' })
    cleanup.push(() => c.end())
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    const opLines = (): Record<string, unknown>[] => s.logs.find('access').filter((l) => l.method === 'WS')

    // a query over the socket: complete
    c.send({ type: 'subscribe', id: 'q1', payload: { query: 'query Ok { ok }' } })
    await c.wait((x) => x.messages.some((m) => m.id === 'q1' && m.type === 'complete'), 10_000, 'the query')
    // a subscription the client stops
    c.send({ type: 'subscribe', id: 's1', payload: { query: `subscription Stopped ${EVENTS('acc-1').slice('subscription '.length)}` } })
    await expect.poll(() => b.active(), { timeout: 10_000 }).toBe(1)
    c.send({ type: 'complete', id: 's1' })
    await expect.poll(() => b.active(), { timeout: 10_000 }).toBe(0)
    // a refused one (operationName names no operation)
    c.send({ type: 'subscribe', id: 'bad', payload: { query: 'subscription A { events(channel: "x") { seq } }', operationName: 'Nope' } })
    await c.wait((x) => x.messages.some((m) => m.id === 'bad' && m.type === 'error'), 10_000, 'the refusal')
    // a subscription still running when the socket closes
    c.send({ type: 'subscribe', id: 's2', payload: { query: `subscription Dropped ${EVENTS('acc-2').slice('subscription '.length)}` } })
    await expect.poll(() => b.active(), { timeout: 10_000 }).toBe(1)
    await expect.poll(() => opLines().length, { timeout: 10_000 }).toBe(3)
    c.end()
    await expect.poll(() => opLines().length, { timeout: 10_000 }).toBe(4)

    const byOp = new Map(opLines().map((l) => [l.opId, l]))
    const q = byOp.get('q1')!
    expect(q).toMatchObject({ method: 'WS', route: 'gql', tenant: 'acme', op: 'Ok', status: 200, outcome: 'complete', path: '/graphql' })
    expect(typeof q.reqId).toBe('string')
    expect(typeof q.durMs).toBe('number')
    expect(byOp.get('s1')).toMatchObject({ method: 'WS', route: 'gql', tenant: 'acme', op: 'Stopped', status: 200, outcome: 'stopped' })
    expect(byOp.get('bad')).toMatchObject({ method: 'WS', route: 'gql', status: 400, code: 'BAD_REQUEST', outcome: 'refused' })
    expect(byOp.get('s2')).toMatchObject({ method: 'WS', route: 'gql', tenant: 'acme', op: 'Dropped', status: 200, outcome: 'closed' })
    // the query string may carry secrets: never logged
    for (const l of opLines()) expect(String(l.path)).not.toContain('secret')

    // refused by a filter of the chain: its status and code, and the filter that answered
    const d = await RawClient.open(s.url, ['graphql-transport-ws'])
    cleanup.push(() => d.end())
    d.send({ type: 'connection_init', payload: { 'x-tenant-id': 'nobody' } })
    await d.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    d.send({ type: 'subscribe', id: 'who', payload: { query: EVENTS('acc-3') } })
    await d.wait((x) => x.messages.some((m) => m.id === 'who' && m.type === 'error'), 10_000, 'the refusal')
    await expect.poll(() => opLines().length, { timeout: 10_000 }).toBe(5)
    const who = opLines().find((l) => l.opId === 'who')!
    expect(who).toMatchObject({ method: 'WS', route: 'gql', outcome: 'refused', filter: 'tenant' })
    expect(who.status).toBeGreaterThanOrEqual(400)
    expect(typeof who.code).toBe('string')
  })
})
