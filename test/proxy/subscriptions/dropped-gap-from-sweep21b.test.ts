// A `dropped` gap for a subscription's first events — the connection's rate tokens spent on
// another subscription, its queue bound reached before it was written anything — said `from: null`:
// the client could neither tell where the loss began nor re-send from it. It starts where the
// subscription joined the stream, and a subscribe from that cursor gets exactly what was missed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

describe('dropped gap before the first event', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      subscriptions: { defaultTier: 'bronze', qos: { bronze: { ratePerSec: 4, burst: 1, maxQueue: 1, maxQueueBytes: '256kib' } } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  it('carries the cursor the subscription started at', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    const a = c.subscribe(EVENTS('a'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'a'))
    be.publish('a') // spends the connection's one token
    await a.received.wait((r) => r.events.length === 1)
    const b = c.subscribe(EVENTS('b'))
    await waitUntil(() => be.subscribes.some((s) => s.channel === 'b'))
    const seqs = [be.publish('b'), be.publish('b'), be.publish('b')]
    // with a queue of one, the first two are dropped before any token comes back
    await b.received.wait((r) => r.events.length === 1 && r.gaps.length === 1, 5_000, 'the gap and the last event')
    const gap = b.received.gaps[0]!
    expect(gap).toMatchObject({ reason: 'dropped', missed: 2 })
    expect(gap.from).not.toBeNull()
    expect(b.received.seqs).toEqual([seqs[2]])
    // re-sending from `from` yields the missed events, then the one delivered
    const again = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`)
    const resend = again.subscribe(EVENTS('b'), { cursor: gap.from! })
    await resend.received.wait((r) => r.events.length === 3, 5_000, 'the replay')
    expect(resend.received.seqs).toEqual(seqs)
    expect(resend.received.gaps).toEqual([])
    expect(b.received.events[0]!.extensions!.cursor).toBe(resend.received.events[2]!.extensions!.cursor)
    await again.dispose()
    await c.dispose()
  })
})
