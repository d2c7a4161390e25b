// igw_subscription_delivery_seconds is "event received from the upstream → written to the client
// socket" for live delivery. Events re-sent from the in-memory log on a resume carried the time
// they first came from the upstream, so every replayed event was observed with its age as its
// delivery latency (a resume from a cursor minutes old filled the top buckets, and the p99 an
// operator alerts on jumped with every reconnect). Events read back from Redis were already left
// out; the memory log's are now too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { sleep } from '../../helpers/wait.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

describe('subscription hub: replayed events are not delivery-latency observations (sweep 17b)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const clients: GqlClient[] = []
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({ routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await proxy?.close()
    await be?.close()
  })

  const observed = async () => metricSum(await proxy.metricsText(), 'igw_subscription_delivery_seconds_count')
  const slow = async () => {
    const m = await proxy.metricsText()
    return metricSum(m, 'igw_subscription_delivery_seconds_count') - metricSum(m, 'igw_subscription_delivery_seconds_bucket', 'le="1"')
  }

  it('a resume from the memory log re-sends every missed event without observing it; live events after it are observed', async () => {
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const first = new GqlClient(url)
    clients.push(first)
    const a = first.subscribe(EVENTS('metric-replay'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'metric-replay'), 5_000, 'the upstream subscribe')
    for (let i = 0; i < 20; i++) be.publish('metric-replay')
    await a.received.wait((r) => r.events.length === 20)
    const cursor = a.received.events[0]!.extensions!.cursor!
    await waitUntil(async () => (await observed()) === 20, 5_000, 'the 20 live deliveries observed')
    // The logged events get older than the 1 s bucket.
    await sleep(1_300)

    const second = new GqlClient(url)
    clients.push(second)
    const b = second.subscribe(EVENTS('metric-replay'), { cursor })
    await b.received.wait((r) => r.events.length === 19, 5_000, 'the 19 missed events replayed')
    expect(b.received.gaps).toEqual([])
    await sleep(200)
    // Nothing was delivered live meanwhile: no observation, and none of them over a second.
    expect(await observed()).toBe(20)
    expect(await slow()).toBe(0)

    // Live delivery is still measured, to both clients.
    be.publish('metric-replay')
    await b.received.wait((r) => r.events.length === 20)
    await waitUntil(async () => (await observed()) === 22, 5_000, 'the live event observed for both clients')
  })
})
