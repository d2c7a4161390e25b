// Topic protocol: `subscribed` carries where the subscription stands. A cursor that is not one of
// the stream's (garbage, or a valid cursor of another topic's stream) was echoed back as if
// delivery went on from it, while the `invalid` gap right after said it starts at the head: a
// client keeping the acknowledged cursor resumed from the bad one again on every reconnect.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient, waitUntil } from './clients.ts'

describe('topic protocol: the cursor in `subscribed` (sweep 20d)', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  let url: string
  const raws: RawClient[] = []

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }],
      subscriptions: {
        cursorKey: 'c'.repeat(40),
        topics: {
          red: { query: 'subscription { events(channel: "red") { seq } }' },
          blue: { query: 'subscription { events(channel: "blue") { seq } }' },
        },
      },
    })
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    for (const c of raws) c.end()
    await proxy?.close()
    await be?.close()
  })

  const open = async (): Promise<RawClient> => {
    const c = await RawClient.open(url)
    raws.push(c)
    return c
  }
  const of = (c: RawClient, op: string, id: string) => c.of((m) => m.op === op && m.id === id)

  it('is the head when the cursor is not one of the stream\'s; the client\'s own cursor when it is', async () => {
    const c = await open()
    c.send({ op: 'subscribe', topic: 'blue' })
    c.send({ op: 'subscribe', topic: 'red' })
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'red' || s.channel === 'blue').length === 2, 5_000, 'both upstream subscribes')
    be.publish('blue')
    be.publish('red')
    await c.wait(() => of(c, 'event', 'blue').length === 1 && of(c, 'event', 'red').length === 1)
    const cursorOf = (id: string) => ((of(c, 'event', id)[0]!.payload as { extensions: { cursor: string } }).extensions.cursor)
    const blue = cursorOf('blue')
    const red = cursorOf('red')

    // Garbage, and a genuine cursor of the other topic: both answered with an `invalid` gap to the head.
    c.send({ op: 'subscribe', id: 'g', topic: 'red', cursor: 'not-a-cursor' })
    c.send({ op: 'subscribe', id: 'x', topic: 'red', cursor: blue })
    // Its own cursor: delivery goes on from it.
    c.send({ op: 'subscribe', id: 'own', topic: 'red', cursor: red })
    await c.wait(() => of(c, 'gap', 'g').length === 1 && of(c, 'gap', 'x').length === 1 && of(c, 'subscribed', 'own').length === 1)
    for (const id of ['g', 'x']) {
      const ack = of(c, 'subscribed', id)[0]!
      const gap = of(c, 'gap', id)[0]! as { gap: { reason: string; to: string }; cursor: string }
      expect(gap.gap.reason).toBe('invalid')
      expect(ack.cursor).toBe(gap.cursor)
      expect(ack.cursor).toBe(red) // the red stream's head: its one event
    }
    expect(of(c, 'subscribed', 'own')[0]!.cursor).toBe(red)
    expect(of(c, 'gap', 'own')).toHaveLength(0)
  })
})
