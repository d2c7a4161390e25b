import { describe, expect, it } from 'vitest'
import { COMPLETE, DeliveryQueue, foldIntoGap, type GapHolder } from '../../../proxy/subscriptions/delivery-queue.ts'
import type { EpochMark, LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'

function sub(): GapHolder {
  return { lastCursor: 'c0', pendingGap: undefined, closed: false }
}
function ev(n: number): LogEvent {
  return { kind: 'event', epoch: 'e', offset: n, ts: n, cursor: `c${n}`, tail: 'x'.repeat(100), result: {}, receivedAt: 0 }
}
const item = (s: GapHolder, n: number) => ({ sub: s, entry: ev(n), bytes: 100 })

describe('delivery queue and QoS drops', () => {
  it('bronze/silver: over the count bound the oldest events go, folded into one gap per subscription', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 3, maxQueueBytes: 1e9 })
    const a = sub()
    for (let i = 1; i <= 10; i++) expect(q.push(item(a, i))).toBe('queued')
    expect(q.events).toBe(3)
    expect(q.dropped).toBe(7)
    expect(a.pendingGap).toEqual({ reason: 'dropped', from: 'c0', to: 'c7', missed: 7 })
    expect(q.gapOwed.has(a)).toBe(true)
    expect([q.shift()!.entry, q.shift()!.entry, q.shift()!.entry].map((e) => (e as LogEvent).offset)).toEqual([8, 9, 10])
  })

  it('the byte bound drops too; subscriptions keep separate gaps', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1000, maxQueueBytes: 250 })
    const a = sub()
    const b = sub()
    q.push(item(a, 1))
    q.push(item(b, 1))
    q.push(item(a, 2)) // 300 bytes: a1 goes
    expect(a.pendingGap?.missed).toBe(1)
    expect(b.pendingGap).toBeUndefined()
    q.push(item(b, 2)) // b1 goes
    expect(b.pendingGap).toEqual({ reason: 'dropped', from: 'c0', to: 'c1', missed: 1 })
    expect(q.bytes).toBe(200)
  })

  it('gold never drops: it reports overflow over its byte cap', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: false, maxQueue: 1, maxQueueBytes: 250 })
    const a = sub()
    expect(q.push(item(a, 1))).toBe('queued')
    expect(q.push(item(a, 2))).toBe('queued')
    expect(q.push(item(a, 3))).toBe('overflow')
    expect(q.dropped).toBe(0)
    expect(q.events).toBe(3)
  })

  it('a dropped epoch mark makes the gap an epoch gap; terminal messages survive drops', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1, maxQueueBytes: 1e9 })
    const a = sub()
    const m: EpochMark = { kind: 'epoch', epoch: 'f', offset: 0, ts: 0, cursor: 'f0' }
    q.push(item(a, 1))
    q.push({ sub: a, entry: m, bytes: 96 })
    q.push({ sub: a, entry: COMPLETE, bytes: 96 })
    q.push(item(a, 2)) // over the bound: 1 dropped; then the mark and the complete stand in front
    q.push(item(a, 3)) // mark folded, complete moved to urgent, 2 dropped
    expect(a.pendingGap?.reason).toBe('epoch')
    expect(a.pendingGap?.from).toBe('c0')
    expect(a.pendingGap?.to).toBe('c2')
    expect(a.pendingGap?.missed).toBeUndefined()
    expect(q.urgent.map((i) => i.entry.kind)).toEqual(['complete'])
  })

  it('items of a subscription the client ended are discarded, not counted as drops', () => {
    const q = new DeliveryQueue<GapHolder>({ drops: true, maxQueue: 1, maxQueueBytes: 1e9 })
    const a = sub()
    const b = sub()
    q.push(item(a, 1))
    a.closed = true
    q.push(item(b, 1))
    expect(q.dropped).toBe(0)
    expect(b.pendingGap).toBeUndefined()
  })

  it('folding a replay gap keeps its from and the strongest reason', () => {
    const a = sub()
    expect(foldIntoGap(a, { kind: 'gap', gap: { reason: 'trimmed', from: 'cX', to: 'c5' } })).toBe(false)
    expect(a.pendingGap).toEqual({ reason: 'trimmed', from: 'cX', to: 'c5' })
    expect(foldIntoGap(a, ev(6))).toBe(true)
    expect(a.pendingGap).toEqual({ reason: 'trimmed', from: 'cX', to: 'c6' })
    foldIntoGap(a, { kind: 'gap', gap: { reason: 'invalid', from: null, to: 'c9' } })
    expect(a.pendingGap?.reason).toBe('invalid')
  })
})
