import { describe, expect, it } from 'vitest'
import { COMPLETE, DeliveryQueue, type GapEntry, type GapHolder, type QueueItem } from '../../../proxy/subscriptions/delivery-queue.ts'
import type { EpochMark, LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'

function sub(): GapHolder {
  return { lastCursor: 'c0', pendingGap: undefined, closed: false }
}
function ev(n: number, epoch = 'e'): LogEvent {
  return { kind: 'event', epoch, offset: n, ts: n, cursor: `${epoch}${n}`, tail: 'x'.repeat(100), result: {}, receivedAt: 0 }
}
const item = (s: GapHolder, n: number, epoch = 'e'): QueueItem<GapHolder> => ({ sub: s, entry: ev(n, epoch), bytes: 100 })

/** What a pump would write: owed gap notices first, then terminal messages, then the queue in order. */
function drain(q: DeliveryQueue<GapHolder>): string[] {
  const out: string[] = []
  for (const s of q.gapOwed) {
    const g = s.pendingGap!
    s.pendingGap = undefined
    out.push(`gap:${g.reason}:${g.from}->${g.to}${g.missed !== undefined ? `:${g.missed}` : ''}`)
  }
  q.gapOwed.clear()
  for (const u of q.urgent.splice(0)) out.push(u.entry.kind)
  for (let i = q.shift(); i !== undefined; i = q.shift()) {
    const e = i.entry
    out.push(e.kind === 'event' ? `event:${e.cursor}` : e.kind === 'epoch' ? `epoch:${e.cursor}` : e.kind === 'gap' ? `gap:${e.gap.reason}:${e.gap.from}->${e.gap.to}` : e.kind)
  }
  return out
}

describe('delivery queue drops one item at a time (sweep 19b)', () => {
  it('dropping an epoch mark that brings the queue back under its byte bound keeps the event behind it; the client still gets the epoch gap', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1000, maxQueueBytes: 250 })
    const a = sub()
    const mark: EpochMark = { kind: 'epoch', epoch: 'f', offset: 0, ts: 0, cursor: 'f0' }
    q.push({ sub: a, entry: mark, bytes: 96 })
    q.push(item(a, 1, 'f'))
    q.push(item(a, 2, 'f')) // 296 bytes: the mark alone goes (196 bytes), f1 and f2 stay
    expect(q.bytes).toBe(200)
    expect(q.events).toBe(2)
    expect(q.dropped).toBe(0)
    expect(drain(q)).toEqual(['gap:epoch:c0->f0', 'event:f1', 'event:f2'])
  })

  it('a replay gap entry at the head goes alone, its reason and from kept in the notice', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1000, maxQueueBytes: 250 })
    const a = sub()
    const gap: GapEntry = { kind: 'gap', gap: { reason: 'trimmed', from: 'cX', to: 'c4' } }
    q.push({ sub: a, entry: gap, bytes: 96 })
    q.push(item(a, 5))
    q.push(item(a, 6))
    expect(q.dropped).toBe(0)
    expect(drain(q)).toEqual(['gap:trimmed:cX->c4', 'event:e5', 'event:e6'])
  })

  it('moving a terminal message out of the way is enough when it brings the bytes back under the bound', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1000, maxQueueBytes: 250 })
    const a = sub()
    const b = sub()
    q.push({ sub: a, entry: COMPLETE, bytes: 96 })
    q.push(item(b, 1))
    q.push(item(b, 2))
    expect(q.dropped).toBe(0)
    expect(b.pendingGap).toBeUndefined()
    expect(drain(q)).toEqual(['complete', 'event:e1', 'event:e2'])
  })

  it('the count bound still drops events behind marks (marks do not count as events)', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1, maxQueueBytes: 1e9 })
    const a = sub()
    q.push({ sub: a, entry: { kind: 'epoch', epoch: 'f', offset: 0, ts: 0, cursor: 'f0' }, bytes: 96 })
    q.push(item(a, 1, 'f'))
    q.push(item(a, 2, 'f'))
    expect(q.dropped).toBe(1)
    expect(drain(q)).toEqual(['gap:epoch:c0->f1', 'event:f2'])
  })
})
