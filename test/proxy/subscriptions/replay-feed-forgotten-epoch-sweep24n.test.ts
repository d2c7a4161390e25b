// Sweep 24n: a replay that falls so far behind that its stream's ring forgot the client's epoch
// (it keeps MAX_EPOCHS = 16 of them: an upstream in a crash loop) continues at the ring's head.
// Before, the notice said `trimmed` although the client passed into another epoch, and when
// nothing was left in the ring (everything aged out meanwhile) there was no notice at all: the
// feed went live and the client's next event came from another epoch without a word.
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import type { QueuedEntry } from '../../../proxy/subscriptions/delivery-queue.ts'
import { HubMetrics } from '../../../proxy/subscriptions/metrics.ts'
import { ReplayFeed, type FeedSource } from '../../../proxy/subscriptions/replay-feed.ts'
import { ReplayRing, type EpochMark, type LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'
import { waitUntil } from '../../helpers/wait.ts'

const ev = (epoch: string, offset: number, ts: number): LogEvent => ({ kind: 'event', epoch, offset, ts, cursor: `${epoch}:${offset}`, tail: '', result: { data: {} }, receivedAt: 0 })
const mark = (epoch: string, ts: number): EpochMark => ({ kind: 'epoch', epoch, offset: 0, ts, cursor: `${epoch}:0` })
const epochId = (i: number) => i.toString(16).padStart(16, '0')
const src = (ring: ReplayRing): FeedSource => ({ ring, streamId: 's', maxAgeMs: ring.maxAgeMs, metrics: new HubMetrics(new Registry()), logger: pino({ level: 'silent' }), cursor: (e, o) => `${e}:${o}` })
const label = (e: QueuedEntry | null | undefined) => (e === null ? 'wait' : e === undefined ? 'live' : e.kind === 'gap' ? `gap:${e.gap.reason}:${e.gap.from}->${e.gap.to}` : e.kind === 'event' || e.kind === 'epoch' ? e.cursor : e.kind)

/** A feed that read (E0, 1), then 20 upstream restarts before it reads on. */
function behind(maxEvents: number, maxAgeMs: number): { ring: ReplayRing; feed: ReplayFeed; lastTs: number } {
  const ring = new ReplayRing(maxEvents, maxAgeMs)
  const e0 = epochId(0)
  const t0 = Date.now()
  ring.startEpoch(e0, t0)
  const feed = new ReplayFeed(src(ring), ring.endSeq, e0, 0, `${e0}:0`)
  ring.push(ev(e0, 1, t0), t0)
  expect(label(feed.next())).toBe(`${e0}:1`)
  let ts = t0
  for (let i = 1; i <= 20; i++) ring.push(mark(epochId(i), ++ts), ts)
  return { ring, feed, lastTs: ts }
}

function drain(feed: ReplayFeed): string[] {
  const out: string[] = []
  for (let e = feed.next(); out.length < 50; e = feed.next()) {
    out.push(label(e))
    if (e === undefined) break
  }
  return out
}

describe('replay feed behind a ring that forgot its epoch (sweep 24n)', () => {
  it('the notice is an epoch gap to the ring head, not a trim', () => {
    const { feed } = behind(4, 60_000)
    expect(drain(feed)).toEqual([`gap:epoch:${epochId(0)}:1->${epochId(20)}:0`, 'live'])
  })

  it('with everything aged out of the ring meanwhile, the client is still told before it goes live', async () => {
    const { ring, feed, lastTs } = behind(2, 40)
    await waitUntil(() => Date.now() > lastTs + 45, 2_000, 'the ring contents older than maxAgeMs')
    ring.trimAged(Date.now())
    expect(ring.size).toBe(0)
    expect(drain(feed)).toEqual([`gap:epoch:${epochId(0)}:1->${epochId(20)}:0`, 'live'])
  })
})
