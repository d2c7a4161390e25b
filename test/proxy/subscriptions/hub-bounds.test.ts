// Bounds on what one client can make the hub hold or re-send, through a real igw and a real
// graphql-ws backend: upstream streams per worker (`subscriptions.upstream.maxStreams`: lingering
// streams are closed oldest first, a new stream is refused with OVERLOADED only when every one has
// subscribers), and topic replays admitted like subscribes (the route's chain, so the quota counts
// them). Every wait is on a message or a count, never on a timer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient, topicSeqs, waitUntil, type NextPayload } from './clients.ts'

const TOPICS = { events: { query: 'subscription($channel: String!) { events(channel: $channel) { seq note } }', clientVariables: ['channel'] } }

/** Topic-protocol answers (subscribed or error) to operation `id`. */
const answers = (c: RawClient, id: string) => c.of((m) => m.id === id && (m.op === 'subscribed' || m.op === 'error'))
const errorCode = (m: Record<string, unknown>) => ((m.errors as { extensions?: { code?: string } }[] | undefined)?.[0]?.extensions?.code)

/** Send a topic message and wait for the next answer to `id`. */
async function ask(c: RawClient, id: string, msg: Record<string, unknown>): Promise<Record<string, unknown>> {
  const before = answers(c, id).length
  c.send(msg)
  await c.wait((x) => answers(x, id).length > before, 5_000, `an answer to ${String(msg.op)} ${id}`)
  return answers(c, id)[before]!
}

describe('subscription hub: upstream streams per worker are bounded (upstream.maxStreams)', () => {
  const MAX = 4
  let be: SubscriptionBackend
  let proxy: TestProxy
  const upstreams = async () => metricSum(await proxy.metricsText(), 'igw_subscription_upstreams')

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      // a linger far longer than the test: only the bound can close these streams
      subscriptions: { upstream: { lingerMs: 600_000, maxStreams: MAX }, topics: TOPICS },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('a client cycling subscribe/complete with distinct variables never holds more than maxStreams upstream; lingering streams are closed oldest first, nothing refused', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`)
    const before = await proxy.metricsText()
    const N = 20
    let maxActive = 0
    let maxUpstreams = 0
    for (let i = 0; i < N; i++) {
      const ack = await ask(c, 's', { op: 'subscribe', id: 's', topic: 'events', variables: { channel: `cycle-${i}` } })
      expect(ack.op).toBe('subscribed')
      await waitUntil(() => be.subscribes.filter((s) => s.channel === `cycle-${i}`).length === 1, 5_000, `the backend subscribe on cycle-${i}`)
      maxActive = Math.max(maxActive, be.active())
      maxUpstreams = Math.max(maxUpstreams, await upstreams())
      const completes = c.of((m) => m.op === 'complete').length
      c.send({ op: 'unsubscribe', id: 's' })
      await c.wait((x) => x.of((m) => m.op === 'complete').length > completes)
    }
    expect(maxActive).toBeLessThanOrEqual(MAX)
    expect(maxUpstreams).toBeLessThanOrEqual(MAX)
    // the bound is reached and held: the newest MAX streams linger, the older ones were closed
    await waitUntil(() => be.active() === MAX, 5_000, `${MAX} backend subscriptions`)
    expect(await upstreams()).toBe(MAX)
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_subscription_upstream_evictions_total') - metricSum(before, 'igw_subscription_upstream_evictions_total')).toBe(N - MAX)
    expect(metricSum(after, 'igw_subscription_rejections_total') - metricSum(before, 'igw_subscription_rejections_total')).toBe(0)
    expect(c.of((m) => m.op === 'error')).toEqual([])
    // the lingering ones are the newest: re-subscribing to the last channel reuses its stream
    const subscribesBefore = be.subscribes.length
    expect((await ask(c, 'again', { op: 'subscribe', id: 'again', topic: 'events', variables: { channel: `cycle-${N - 1}` } })).op).toBe('subscribed')
    be.publish(`cycle-${N - 1}`, { note: 'still upstream' })
    await c.wait((x) => topicSeqs(x, 'again').length === 1)
    expect(be.subscribes.length).toBe(subscribesBefore)
    c.end()
  })

  it('a new stream is refused with OVERLOADED (counted, logged) only when every stream has subscribers; a shared one is still admitted, and a freed one makes room', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`)
    // MAX streams in use (the first test's lingering streams make way)
    for (let i = 0; i < MAX; i++) expect((await ask(c, `k${i}`, { op: 'subscribe', id: `k${i}`, topic: 'events', variables: { channel: `held-${i}` } })).op).toBe('subscribed')
    await waitUntil(() => be.active() === MAX, 5_000, `${MAX} backend subscriptions`)
    expect(c.of((m) => m.op === 'error')).toEqual([])
    const before = await proxy.metricsText()
    const refused = await ask(c, 'over', { op: 'subscribe', id: 'over', topic: 'events', variables: { channel: 'one-too-many' } })
    expect(refused.op).toBe('error')
    expect(errorCode(refused)).toBe('OVERLOADED')
    expect((refused.errors as { extensions: Record<string, unknown> }[])[0]!.extensions).toMatchObject({ limit: MAX })
    expect(be.subscribes.some((s) => s.channel === 'one-too-many')).toBe(false)
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_subscription_rejections_total', 'code="OVERLOADED"') - metricSum(before, 'igw_subscription_rejections_total', 'code="OVERLOADED"')).toBe(1)
    await waitUntil(() => proxy.logs.find('subscriptions.upstream.maxStreams reached with every stream in use: refusing new streams with OVERLOADED').length === 1, 5_000, 'the warning')
    // a second refusal within the interval is counted but not logged again
    expect(errorCode(await ask(c, 'over', { op: 'subscribe', id: 'over', topic: 'events', variables: { channel: 'one-too-many' } }))).toBe('OVERLOADED')
    expect(proxy.logs.find('subscriptions.upstream.maxStreams reached with every stream in use: refusing new streams with OVERLOADED')).toHaveLength(1)
    // joining a stream that exists needs no new one
    expect((await ask(c, 'share', { op: 'subscribe', id: 'share', topic: 'events', variables: { channel: 'held-0' } })).op).toBe('subscribed')
    // one stream left without subscribers: it lingers, and the next new stream takes its place
    for (const id of ['k1']) {
      const completes = c.of((m) => m.op === 'complete').length
      c.send({ op: 'unsubscribe', id })
      await c.wait((x) => x.of((m) => m.op === 'complete').length > completes)
    }
    expect((await ask(c, 'over', { op: 'subscribe', id: 'over', topic: 'events', variables: { channel: 'one-too-many' } })).op).toBe('subscribed')
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'one-too-many'), 5_000, 'the backend subscribe')
    await waitUntil(() => be.active() === MAX, 5_000, `${MAX} backend subscriptions`)
    expect(await upstreams()).toBe(MAX)
    be.publish('held-0', { note: 'shared' })
    await c.wait((x) => topicSeqs(x, 'k0').length === 1 && topicSeqs(x, 'share').length === 1)
    c.end()
    // the connection's streams now linger; the bound still holds
    await waitUntil(async () => (await upstreams()) === MAX && be.active() === MAX, 5_000, 'the streams lingering')
  })
})

describe('subscription hub: topic replays are admitted like subscribes (filter chain, quota)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { lim: {}, one: {} },
      quotas: {
        tenants: {
          // 3 subscribes, then (practically) no more: a replay must spend one too
          lim: { subscriptions: { rate: 0.001, burst: 3 } },
          // one subscription at a time: a replay of it must not need a second slot
          one: { subscriptions: { maxConcurrent: 1, rate: 100_000, burst: 100_000 } },
        },
      },
      subscriptions: { topics: TOPICS },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'subscriptions' }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('a tenant over its subscription quota cannot replay unboundedly: each replay spends a subscribe, then RATE_LIMITED', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [], { 'x-tenant-id': 'lim' })
    expect((await ask(c, 's', { op: 'subscribe', id: 's', topic: 'events', variables: { channel: 'replay-quota' } })).op).toBe('subscribed')
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'replay-quota'), 5_000, 'the backend subscribe')
    for (let i = 0; i < 5; i++) be.publish('replay-quota')
    await c.wait((x) => topicSeqs(x, 's').length === 5)
    const seqs = topicSeqs(c, 's')
    const first = (c.of((m) => m.op === 'event')[0]!.payload as NextPayload).extensions!.cursor!
    const before = await proxy.metricsText()
    const outcomes: string[] = []
    for (let i = 0; i < 20; i++) {
      const a = await ask(c, 's', { op: 'replay', id: 's', cursor: first })
      outcomes.push(a.op === 'subscribed' ? 'replayed' : String(errorCode(a)))
      if (a.op === 'subscribed') await c.wait((x) => topicSeqs(x, 's').length === 5 + 4 * outcomes.filter((o) => o === 'replayed').length)
    }
    // burst 3: the subscribe and two replays; the third is refused and ends the subscription, so
    // the rest have nothing to replay (a new subscribe is refused by the quota the same way)
    expect(outcomes.slice(0, 3)).toEqual(['replayed', 'replayed', 'RATE_LIMITED'])
    expect(outcomes.slice(3).every((o) => o === 'BAD_REQUEST')).toBe(true)
    expect(topicSeqs(c, 's')).toEqual([...seqs, ...seqs.slice(1), ...seqs.slice(1)])
    expect(errorCode(await ask(c, 's', { op: 'subscribe', id: 's', topic: 'events', variables: { channel: 'replay-quota' } }))).toBe('RATE_LIMITED')
    const after = await proxy.metricsText()
    expect(metricSum(after, 'igw_subscription_rejections_total', 'code="RATE_LIMITED"') - metricSum(before, 'igw_subscription_rejections_total', 'code="RATE_LIMITED"')).toBe(2)
    expect(metricSum(after, 'igw_replay_events_total') - metricSum(before, 'igw_replay_events_total')).toBe(8)
    c.end()
  })

  it('a replay gives its subscription slot back before it is admitted: a tenant at maxConcurrent can still replay, and its slot count stays right', async () => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, [], { 'x-tenant-id': 'one' })
    expect((await ask(c, 's', { op: 'subscribe', id: 's', topic: 'events', variables: { channel: 'replay-slot' } })).op).toBe('subscribed')
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'replay-slot'), 5_000, 'the backend subscribe')
    be.publish('replay-slot')
    be.publish('replay-slot')
    await c.wait((x) => topicSeqs(x, 's').length === 2)
    const first = (c.of((m) => m.op === 'event')[0]!.payload as NextPayload).extensions!.cursor!
    // at the limit: a second subscription is refused
    expect(errorCode(await ask(c, 'x', { op: 'subscribe', id: 'x', topic: 'events', variables: { channel: 'replay-slot-2' } }))).toBe('RATE_LIMITED')
    for (let i = 1; i <= 3; i++) {
      expect((await ask(c, 's', { op: 'replay', id: 's', cursor: first })).op).toBe('subscribed')
      await c.wait((x) => topicSeqs(x, 's').length === 2 + i)
    }
    be.publish('replay-slot')
    await c.wait((x) => topicSeqs(x, 's').length === 6)
    // still exactly one slot held: freeing it admits another
    expect(errorCode(await ask(c, 'x', { op: 'subscribe', id: 'x', topic: 'events', variables: { channel: 'replay-slot-2' } }))).toBe('RATE_LIMITED')
    const completes = c.of((m) => m.op === 'complete').length
    c.send({ op: 'unsubscribe', id: 's' })
    await c.wait((x) => x.of((m) => m.op === 'complete').length > completes)
    expect((await ask(c, 'x', { op: 'subscribe', id: 'x', topic: 'events', variables: { channel: 'replay-slot-2' } })).op).toBe('subscribed')
    c.end()
  })
})
