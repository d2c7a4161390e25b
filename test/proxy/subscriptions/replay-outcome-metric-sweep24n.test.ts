// Sweep 24n: igw_replay_requests_total{result} counted a replay the memory ring could start as
// "resumed" at the subscribe, before a single event was sent. A client that reads more slowly than
// the log turns over then got a `trimmed` gap — the events it asked for were gone — and the
// request still counted as resumed: the gap ratio operators size the replay log by read zero. The
// outcome is counted once known: "gap" at the first notice, "resumed" once the replay caught up.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

let be: SubscriptionBackend
let proxy: TestProxy
const clients: GqlClient[] = []
const client = () => {
  const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'bz' })
  clients.push(c)
  return c
}
const requests = async (result: string) => metricSum(await proxy.metricsText(), 'igw_replay_requests_total', `result="${result}"`)
const logged = async () => metricSum(await proxy.metricsText(), 'igw_subscription_events_total')

beforeAll(async () => {
  be = await startSubscriptionBackend()
  proxy = await startTestProxy({
    tenants: { bz: { tier: 'bronze' } },
    // a ring of 10 events, and a bronze client that takes 4 events a second (2 of them queued)
    subscriptions: { replay: { maxEvents: 10 }, qos: { bronze: { ratePerSec: 4, burst: 1, maxQueue: 4 } } },
    routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const }, filters: [{ name: 'tenant' as const }] }],
  })
})
afterAll(async () => {
  await Promise.all(clients.map((c) => c.dispose()))
  await proxy?.close()
  await be?.close()
})

it('a ring replay that falls behind the log counts as "gap", not "resumed"', async () => {
  // a cursor, then the client leaves (the stream lingers) and 5 events are logged after it
  const a = client()
  const first = a.subscribe(EVENTS('slow'))
  await waitUntil(() => be.subscribes.some((s) => s.channel === 'slow'), 5_000, 'the backend subscribe')
  be.publish('slow')
  await first.received.wait((r) => r.events.length === 1)
  const cursor = first.received.lastCursor!
  first.stop()
  const n = await logged()
  for (let i = 0; i < 5; i++) be.publish('slow')
  await waitUntil(async () => (await logged()) >= n + 5, 5_000, 'the missed events logged')

  const resumedBefore = await requests('resumed')
  const gapBefore = await requests('gap')
  const back = client().subscribe(EVENTS('slow'), { cursor })
  await back.received.wait((r) => r.events.length >= 1, 5_000, 'the replay under way')
  // 20 live events push what the replay has yet to read out of the 10-event ring
  for (let i = 0; i < 20; i++) be.publish('slow')
  await back.received.wait((r) => r.gaps.length > 0, 5_000, 'the trimmed notice')
  expect(back.received.gaps.map((g) => g.reason)).toEqual(['trimmed'])
  await waitUntil(async () => (await requests('gap')) === gapBefore + 1, 5_000, 'the replay counted with a gap')
  back.stop()
  await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active') === 0, 5_000, 'the replay ended')
  expect(await requests('resumed')).toBe(resumedBefore)
  expect(await requests('gap')).toBe(gapBefore + 1)
})
