// The delivery queue without sockets: over its bound, a live item goes before one a replay read
// from the log (the client asked for those by cursor; the log still holds them). Replayed entries
// go only when no live item can (one behind its own subscription's replayed entries cannot: its
// gap notice would be written before them).
import { describe, expect, it } from 'vitest'
import { DeliveryQueue, type GapHolder } from '../../proxy/subscriptions/delivery-queue.ts'
import type { LogEvent } from '../../proxy/subscriptions/replay-ring.ts'

type Sub = GapHolder & { name: string }
const sub = (name: string): Sub => ({ name, lastCursor: `${name}0`, pendingGap: undefined, closed: false })
const ev = (name: string, offset: number): LogEvent => ({ kind: 'event', epoch: 'e', offset, ts: 0, cursor: `${name}${offset}`, tail: '', result: {}, receivedAt: 0 })

function drain(q: DeliveryQueue<Sub>): string[] {
  const out: string[] = []
  for (let it = q.shift(); it !== undefined; it = q.shift()) out.push(it.entry.kind === 'event' ? it.entry.cursor : it.entry.kind)
  return out
}

describe('delivery queue: replayed entries are dropped last (sweep 23c)', () => {
  it('drops the oldest live event of another subscription, not the replay at the head', () => {
    const q = new DeliveryQueue<Sub>({ drops: true, maxQueue: 4, maxQueueBytes: 1 << 20 })
    const r = sub('r')
    const l = sub('l')
    for (let i = 1; i <= 2; i++) q.push({ sub: r, entry: ev('r', i), bytes: 1, replay: true })
    for (let i = 1; i <= 4; i++) q.push({ sub: l, entry: ev('l', i), bytes: 1 })
    expect(r.pendingGap).toBeUndefined()
    expect(l.pendingGap).toEqual({ reason: 'dropped', from: 'l0', to: 'l2', missed: 2 })
    expect(q.dropped).toBe(2)
    expect(drain(q)).toEqual(['r1', 'r2', 'l3', 'l4'])
    expect(r.replayQueued).toBe(0)
    expect(l.queued).toBe(0)
  })

  it('with only a caught-up subscription behind its replayed entries, the oldest go as before', () => {
    const q = new DeliveryQueue<Sub>({ drops: true, maxQueue: 3, maxQueueBytes: 1 << 20 })
    const r = sub('r')
    for (let i = 1; i <= 2; i++) q.push({ sub: r, entry: ev('r', i), bytes: 1, replay: true })
    for (let i = 3; i <= 5; i++) q.push({ sub: r, entry: ev('r', i), bytes: 1 })
    expect(r.pendingGap).toEqual({ reason: 'dropped', from: 'r0', to: 'r2', missed: 2 })
    expect(drain(q)).toEqual(['r3', 'r4', 'r5'])
    expect(r.replayQueued).toBe(0)
  })

  it('purging a subscription resets its replay count', () => {
    const q = new DeliveryQueue<Sub>({ drops: true, maxQueue: 2, maxQueueBytes: 1 << 20 })
    const r = sub('r')
    const l = sub('l')
    q.push({ sub: r, entry: ev('r', 1), bytes: 1, replay: true })
    r.closed = true
    q.purge(r)
    expect(r.replayQueued).toBe(0)
    q.push({ sub: l, entry: ev('l', 1), bytes: 1 })
    q.push({ sub: l, entry: ev('l', 2), bytes: 1 })
    expect(drain(q)).toEqual(['l1', 'l2'])
  })
})
