// Sweep 14: replay cursors across an epoch change whose start (its mark) the log no longer holds
// — trimmed by count or aged out. The client is told the stream restarted; it never passes from
// its epoch into the middle of the next one in silence. Each test failed on the code before the fix.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ReplayRing, type EpochMark, type LogEntry, type LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const E1 = '1111111111111111'
const E2 = '2222222222222222'
const ev = (epoch: string, offset: number, ts: number): LogEvent => ({ kind: 'event', epoch, offset, ts, cursor: `${epoch}:${offset}`, tail: '', result: { data: { n: offset } }, receivedAt: 0 })
const mark = (epoch: string, ts: number): EpochMark => ({ kind: 'epoch', epoch, offset: 0, ts, cursor: `${epoch}:0` })
const ids = (es: LogEntry[]) => es.map((e) => (e.kind === 'event' ? `${e.epoch === E1 ? 'a' : 'b'}${e.offset}` : `mark${e.epoch === E1 ? 'a' : 'b'}`))

describe('replay ring: an epoch change whose mark is gone is never skipped in silence', () => {
  it('a cursor at the end of an old epoch, the new epoch\'s mark trimmed: an "epoch" gap, then what is left', () => {
    const r = new ReplayRing(4, 60_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 3; i++) r.push(ev(E1, i, i), i)
    r.push(mark(E2, 4), 4)
    for (let i = 1; i <= 5; i++) r.push(ev(E2, i, 4 + i), 4 + i) // keeps b2..b5: the mark and b1 are gone
    const res = r.since(E1, 3, 10)
    expect(res.kind).toBe('gap')
    if (res.kind !== 'gap') return
    expect(res.reason).toBe('epoch')
    expect(ids(res.entries)).toEqual(['b2', 'b3', 'b4', 'b5'])
    // delivery continues right before what is left: resuming from there is continuous
    expect([res.resumeEpoch, res.resumeOffset]).toEqual([E2, 1])
    const again = r.since(res.resumeEpoch, res.resumeOffset, 10)
    expect(again.kind).toBe('ok')
    expect(ids((again as { entries: LogEntry[] }).entries)).toEqual(['b2', 'b3', 'b4', 'b5'])
  })

  it('a cursor at the end of an old epoch, the new epoch aged out entirely: an "epoch" gap to the head', () => {
    const r = new ReplayRing(100, 1_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 3; i++) r.push(ev(E1, i, i), i)
    r.push(mark(E2, 4), 4)
    r.push(ev(E2, 1, 5), 5)
    r.push(ev(E2, 2, 6), 6)
    const res = r.since(E1, 3, 10_000) // everything aged out
    expect(res.kind).toBe('gap')
    if (res.kind !== 'gap') return
    expect([res.reason, res.resumeEpoch, res.resumeOffset, res.resumeTs, res.entries]).toEqual(['epoch', E2, 2, 6, []])
    // the head itself is not a gap
    expect(r.since(E2, 2, 10_000)).toEqual({ kind: 'ok', entries: [] })
  })
})

describe('subscription hub: resuming across an upstream restart the log trimmed', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const clients: GqlClient[] = []
  const client = () => {
    const c = new GqlClient(`ws://127.0.0.1:${proxy.port}/graphql`, { 'x-tenant-id': 'acme' })
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({
      tenants: { acme: {} },
      subscriptions: { replay: { maxEvents: 3 }, upstream: { retryInitialMs: 50, retryMaxMs: 200 } },
      routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }] }],
    })
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    await proxy?.close()
    await be?.close()
  })

  it('a client away during a backend restart and more events than the log keeps gets an "epoch" gap, not a silent jump into the new epoch', async () => {
    const first = client()
    const a = first.subscribe(EVENTS('ep'))
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'ep').length === 1)
    be.publish('ep')
    be.publish('ep')
    await a.received.wait((r) => r.events.length === 2)
    const cursor = a.received.lastCursor!
    await first.dispose() // the stream lingers upstream and keeps logging
    await be.stop()
    await be.start()
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'ep').length === 2, 10_000, 'the stream resubscribed upstream')
    const logged = metricSum(await proxy.metricsText(), 'igw_subscription_events_total')
    const seqs = [be.publish('ep'), be.publish('ep'), be.publish('ep'), be.publish('ep')]
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscription_events_total') >= logged + 4, 5_000, 'the 4 new events logged')
    // the log (3 events) holds the new epoch's events 2..4: its start (mark, event 1) is gone
    const back = client().subscribe(EVENTS('ep'), { cursor })
    await back.received.wait((r) => r.events.length === 3)
    expect(back.received.payloads[0]!.extensions!.gap).toEqual({ reason: 'epoch', from: cursor, to: expect.any(String) })
    expect(back.received.seqs).toEqual(seqs.slice(1))
    expect(back.received.gaps).toHaveLength(1)
    back.stop()
  })
})
