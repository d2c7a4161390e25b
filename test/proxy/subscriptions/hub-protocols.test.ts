// The hub terminates the three client protocols itself, runs every subscribe through the route's
// filter chain (tenant, quota kind "subscriptions") and answers refusals per operation.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient, topicSeqs, waitUntil, type NextPayload } from './clients.ts'

describe('subscription hub: protocols and the filter chain', () => {
  let be: SubscriptionBackend
  let demo: DemoBackend
  let proxy: TestProxy
  let demoProxy: TestProxy
  let url: string

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    demo = await startDemoBackend()
    proxy = await startTestProxy({
      tenants: { acme: { tier: 'gold' }, globex: {}, hooli: {} },
      quotas: { tenants: { globex: { subscriptions: { maxConcurrent: 2, rate: 1000 } }, hooli: { subscriptions: { rate: 0.01, burst: 2 } } } },
      subscriptions: {
        connectionInitTimeoutMs: 300,
        topics: {
          events: { query: 'subscription Ev($channel: String!) { events(channel: $channel) { seq tenant note } }', clientVariables: ['channel'] },
          fixed: { query: 'subscription { events(channel: "fixed") { seq note } }' },
        },
      },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }, { name: 'subscriptions' }] }],
    } as never)
    demoProxy = await startTestProxy({ routes: [{ name: 'demo', upstream: demo.url, websocket: { mode: 'terminate' } }] })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await proxy?.close()
    await demoProxy?.close()
    await be?.close()
    await demo?.close()
  })

  it('graphql-transport-ws: live events carry distinct cursors; upstream completion reaches the client; queries work too', async () => {
    const c = new GqlClient(url, { 'x-tenant-id': 'acme' })
    const { received, stop } = c.subscribe(EVENTS('p1'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'p1'), 5_000, 'backend subscribe')
    for (let i = 0; i < 3; i++) be.publish('p1', { note: `n${i}` })
    await received.wait((r) => r.events.length === 3)
    expect(received.events.map((e) => e.data!.events!.note)).toEqual(['n0', 'n1', 'n2'])
    const cursors = received.events.map((e) => e.extensions!.cursor!)
    expect(new Set(cursors).size).toBe(3)
    stop()
    await c.dispose()

    const d = new GqlClient(`ws://127.0.0.1:${demoProxy.port}/graphql`)
    const count = d.subscribe('subscription { countdown(from: 3, intervalMs: 5) }')
    await count.received.wait((r) => r.completed)
    expect(count.received.payloads.map((p) => (p.data as { countdown: number }).countdown)).toEqual([3, 2, 1])
    const hello = d.subscribe('query { hello(name: "ws") }')
    await hello.received.wait((r) => r.completed)
    expect(hello.received.payloads).toEqual([{ data: { hello: 'Hello, ws!' } }])
    await d.dispose()
  })

  it('legacy graphql-ws (subscriptions-transport-ws): init/ack/ka, start → data with cursors, stop', async () => {
    const c = await RawClient.open(url, ['graphql-ws'])
    expect(c.ws.protocol).toBe('graphql-ws')
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'ka'))
    expect(c.messages[0]).toEqual({ type: 'connection_ack' })
    c.send({ type: 'start', id: 'L1', payload: { query: EVENTS('legacy') } })
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'legacy'))
    be.publish('legacy', { note: 'x' })
    await c.wait((x) => x.messages.some((m) => m.type === 'data'))
    const data = c.of((m) => m.type === 'data')[0]!
    expect(data.id).toBe('L1')
    expect((data.payload as NextPayload).data!.events!.note).toBe('x')
    expect((data.payload as NextPayload).extensions!.cursor).toMatch(/^[A-Za-z0-9_-]{60}$/)
    c.send({ type: 'stop', id: 'L1' })
    c.send({ type: 'start', id: 'L2', payload: { query: 5 } })
    await c.wait((x) => x.messages.some((m) => m.type === 'error' && m.id === 'L2'))
    expect(c.close).toBeUndefined() // legacy protocol errors answer the operation, the socket stays
    c.send({ type: 'connection_terminate' })
    expect((await c.closed()).code).toBe(1000)
  })

  it('topic protocol: subscribed with a cursor, per-client filters over one shared stream, unsubscribe, ping', async () => {
    const headers = { 'x-tenant-id': 'acme' }
    const a = await RawClient.open(url, [], headers)
    const b = await RawClient.open(url, [], headers)
    expect(a.ws.protocol).toBe('')
    a.send({ op: 'subscribe', id: 'mine', topic: 'events', variables: { channel: 't1' }, filter: { note: 'keep' } })
    b.send({ op: 'subscribe', topic: 'events', variables: { channel: 't1' } })
    await a.wait((x) => x.messages.some((m) => m.op === 'subscribed'))
    await b.wait((x) => x.messages.some((m) => m.op === 'subscribed'))
    expect(a.messages[0]).toMatchObject({ op: 'subscribed', id: 'mine', topic: 'events' })
    expect(a.messages[0]!.cursor).toMatch(/^[A-Za-z0-9_-]{60}$/)
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 't1').length === 1)
    for (const note of ['keep', 'drop', 'keep', 'other']) be.publish('t1', { note })
    await b.wait((x) => topicSeqs(x, 'events').length === 4)
    await a.wait((x) => topicSeqs(x, 'mine').length === 2)
    expect(a.of((m) => m.op === 'event').map((m) => (m.payload as NextPayload).data!.events!.note)).toEqual(['keep', 'keep'])
    // one upstream subscription served both clients and both filters
    expect(be.subscribes.filter((s) => s.channel === 't1')).toHaveLength(1)
    a.send({ op: 'ping' })
    await a.wait((x) => x.messages.some((m) => m.op === 'pong'))
    a.send({ op: 'unsubscribe', id: 'mine' })
    await a.wait((x) => x.messages.some((m) => m.op === 'complete' && m.id === 'mine'))
    be.publish('t1', { note: 'keep' })
    await b.wait((x) => topicSeqs(x, 'events').length === 5)
    expect(topicSeqs(a, 'mine')).toHaveLength(2)
    a.end()
    b.end()
  })

  it('topic protocol: bad subscribes are refused one by one and the socket stays open', async () => {
    const c = await RawClient.open(url, ['igw-topics'], { 'x-tenant-id': 'acme' })
    expect(c.ws.protocol).toBe('igw-topics')
    c.send({ op: 'subscribe', id: 'u', topic: 'nope' })
    c.send({ op: 'subscribe', id: 'v', topic: 'fixed', variables: { channel: 'x' } })
    c.send({ op: 'subscribe', id: 'f', topic: 'fixed', filter: { note: { $gt: 1 } } })
    c.send({ op: 'subscribe', id: 'c', topic: 'fixed', cursor: 5 })
    c.send({ op: 'what' })
    await c.wait((x) => x.of((m) => m.op === 'error').length === 5)
    const errs = c.of((m) => m.op === 'error')
    expect(errs.map((m) => m.id)).toEqual(['u', 'v', 'f', 'c', undefined])
    expect(JSON.stringify(errs[0])).toContain('unknown topic')
    expect(JSON.stringify(errs[1])).toContain('does not take variable')
    c.send({ op: 'subscribe', id: 'ok', topic: 'fixed' })
    await c.wait((x) => x.messages.some((m) => m.op === 'subscribed' && m.id === 'ok'))
    expect(c.close).toBeUndefined()
    c.end()
  })

  it('graphql-transport-ws protocol violations close with the library codes', async () => {
    const early = await RawClient.open(url, ['graphql-transport-ws'])
    early.send({ type: 'subscribe', id: '1', payload: { query: EVENTS('x') } })
    expect((await early.closed()).code).toBe(4401)

    const twice = await RawClient.open(url, ['graphql-transport-ws'])
    twice.send({ type: 'connection_init' })
    twice.send({ type: 'connection_init' })
    expect((await twice.closed()).code).toBe(4429)

    const silent = await RawClient.open(url, ['graphql-transport-ws'])
    expect((await silent.closed(3_000)).code).toBe(4408)

    const dup = await RawClient.open(url, ['graphql-transport-ws'])
    dup.send({ type: 'connection_init', payload: { 'x-tenant-id': 'acme' } })
    dup.send({ type: 'subscribe', id: '1', payload: { query: EVENTS('dup') } })
    dup.send({ type: 'subscribe', id: '1', payload: { query: EVENTS('dup') } })
    expect(await dup.closed()).toEqual({ code: 4409, reason: 'Subscriber for 1 already exists' })

    const junk = await RawClient.open(url, ['graphql-transport-ws'])
    junk.send({ type: 'connection_init' })
    junk.ws.send('not json')
    expect((await junk.closed()).code).toBe(4400)

    const ping = await RawClient.open(url, ['graphql-transport-ws'])
    ping.send({ type: 'connection_init' })
    ping.send({ type: 'ping', payload: { n: 1 } })
    await ping.wait((x) => x.messages.some((m) => m.type === 'pong'))
    expect(ping.messages[1]).toEqual({ type: 'pong', payload: { n: 1 } })
    ping.end()
  })

  it('refuses a subprotocol it does not speak at the handshake', async () => {
    const res = await request(`http://127.0.0.1:${proxy.port}/graphql`, {
      method: 'GET',
      headers: { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13', 'sec-websocket-protocol': 'mqtt' },
    }).catch((e: Error) => e)
    // undici refuses upgrade responses; either way the proxy answered 400 without upgrading
    if (!(res instanceof Error)) {
      expect(res.statusCode).toBe(400)
      expect(await res.body.text()).toContain('unsupported WebSocket subprotocol')
    }
    await expect(RawClient.open(url, ['mqtt'])).rejects.toThrow(/400/)
  })

  it('a subscribe the tenant filter refuses gets an error for that operation; the socket stays open', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'initech' } })
    c.send({ type: 'subscribe', id: 'a', payload: { query: EVENTS('r') } })
    c.send({ type: 'subscribe', id: 'b', payload: { query: EVENTS('r') } })
    await c.wait((x) => x.of((m) => m.type === 'error').length === 2)
    expect(c.of((m) => m.type === 'error')[0]).toEqual({ id: 'a', type: 'error', payload: [{ message: 'unknown tenant "initech"', extensions: { code: 'UNKNOWN_TENANT' } }] })
    c.send({ type: 'ping' })
    await c.wait((x) => x.messages.some((m) => m.type === 'pong'))
    expect(c.close).toBeUndefined()
    expect(be.subscribes.some((s) => s.channel === 'r')).toBe(false)
    expect(metricSum(await proxy.metricsText(), 'igw_subscription_rejections_total', 'UNKNOWN_TENANT')).toBeGreaterThanOrEqual(2)
    c.end()
  })

  it('subscribe attempts count against the quota kind "subscriptions" (its token bucket)', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    c.send({ type: 'connection_init', payload: { 'x-tenant-id': 'hooli' } })
    for (const id of ['1', '2', '3']) c.send({ type: 'subscribe', id, payload: { query: EVENTS(`attempt-${id}`) } })
    await c.wait((x) => x.messages.some((m) => m.type === 'error'))
    await waitUntil(() => be.subscribes.filter((s) => s.channel.startsWith('attempt-')).length === 2)
    const errors = c.of((m) => m.type === 'error')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatchObject({ id: '3', payload: [{ extensions: { code: 'RATE_LIMITED', kind: 'subscriptions' } }] })
    c.end()
  })

  it('concurrent subscriptions count against the quota kind "subscriptions"; ending one frees its slot', async () => {
    const c = new GqlClient(url, { 'x-tenant-id': 'globex' })
    const s1 = c.subscribe(EVENTS('q1'))
    const s2 = c.subscribe(EVENTS('q2'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'q2') && be.subscribes.some((s) => s.channel === 'q1'))
    const s3 = c.subscribe(EVENTS('q3'))
    await waitUntil(() => s3.received.error !== undefined)
    expect(s3.received.error).toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'RATE_LIMITED', kind: 'subscriptions', policy: 'concurrent' }) })])
    s1.stop()
    await new Promise((r) => setTimeout(r, 50))
    const s4 = c.subscribe(EVENTS('q4'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'q4'), 5_000, 'the freed slot to admit q4')
    expect(s4.received.error).toBeUndefined()
    s2.stop()
    s4.stop()
    await c.dispose()
  })
})
