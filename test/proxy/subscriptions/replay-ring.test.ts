import { describe, expect, it } from 'vitest'
import { ReplayRing, type EpochMark, type LogEntry, type LogEvent } from '../../../proxy/subscriptions/replay-ring.ts'

const E1 = '1111111111111111'
const E2 = '2222222222222222'

function ev(epoch: string, offset: number, ts: number): LogEvent {
  return { kind: 'event', epoch, offset, ts, cursor: `${epoch}:${offset}`, tail: '', result: { data: { n: offset } }, receivedAt: 0 }
}
function mark(epoch: string, ts: number): EpochMark {
  return { kind: 'epoch', epoch, offset: 0, ts, cursor: `${epoch}:0` }
}
const ids = (es: LogEntry[]) => es.map((e) => (e.kind === 'event' ? `${e.epoch === E1 ? 'a' : 'b'}${e.offset}` : `mark${e.epoch === E1 ? 'a' : 'b'}`))

describe('replay ring', () => {
  it('returns exactly the events after a position, in order, nothing before it', () => {
    const r = new ReplayRing(100, 60_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 10; i++) r.push(ev(E1, i, i), i)
    const res = r.since(E1, 6, 10)
    expect(res.kind).toBe('ok')
    expect(ids((res as { entries: LogEntry[] }).entries)).toEqual(['a7', 'a8', 'a9', 'a10'])
    expect((r.since(E1, 10, 10) as { entries: LogEntry[] }).entries).toEqual([])
    expect(ids((r.since(E1, 0, 10) as { entries: LogEntry[] }).entries)).toHaveLength(10)
  })

  it('a position older than the count bound is a "trimmed" gap that says where delivery resumes', () => {
    const r = new ReplayRing(5, 60_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 12; i++) r.push(ev(E1, i, i), i)
    const res = r.since(E1, 3, 12)
    expect(res.kind).toBe('gap')
    if (res.kind !== 'gap') return
    expect(res.reason).toBe('trimmed')
    expect(res.resumeOffset).toBe(7)
    expect(ids(res.entries)).toEqual(['a8', 'a9', 'a10', 'a11', 'a12'])
    // the boundary itself is not a gap
    expect(r.since(E1, 7, 12).kind).toBe('ok')
  })

  it('is bounded in bytes too: large events push old ones out ("trimmed"); the newest always stays', () => {
    const big = (offset: number, bytes: number): LogEvent => ({ ...ev(E1, offset, offset), tail: 'x'.repeat(bytes) })
    const r = new ReplayRing(1_000, 60_000, 10_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 20; i++) r.push(big(i, 3_000), i)
    expect(r.size).toBe(3) // 3 × 3000 ≤ 10 000 < 4 × 3000
    expect(r.bytes).toBe(9_000)
    const res = r.since(E1, 10, 20)
    expect(res.kind).toBe('gap')
    if (res.kind === 'gap') expect([res.reason, res.resumeOffset, ids(res.entries)]).toEqual(['trimmed', 17, ['a18', 'a19', 'a20']])
    r.push(big(21, 50_000), 21) // one event over the bound: kept alone, so it can still be replayed
    expect([r.size, r.bytes]).toEqual([1, 50_000])
    expect(ids((r.since(E1, 20, 21) as { entries: LogEntry[] }).entries)).toEqual(['a21'])
  })

  it('tells events that aged out ("expired") from events pushed out by count ("trimmed")', () => {
    const r = new ReplayRing(4, 1_000)
    r.startEpoch(E1)
    r.push(ev(E1, 1, 0), 0)
    r.push(ev(E1, 2, 100), 100)
    r.push(ev(E1, 3, 5_000), 5_000) // 1 and 2 expire here
    for (let i = 4; i <= 8; i++) r.push(ev(E1, i, 5_000 + i), 5_000 + i) // 3 and 4 trimmed
    const expired = r.since(E1, 1, 5_010)
    expect(expired.kind === 'gap' && expired.reason).toBe('expired')
    const trimmed = r.since(E1, 3, 5_010)
    expect(trimmed.kind === 'gap' && trimmed.reason).toBe('trimmed')
    // and everything expires eventually: the position is then behind an expiry
    const late = r.since(E1, 6, 100_000)
    expect(late.kind === 'gap' && late.reason).toBe('expired')
    expect(late.kind === 'gap' && late.entries).toEqual([])
  })

  it('replays across an epoch change: the rest of the old epoch, the mark, then the new epoch', () => {
    const r = new ReplayRing(100, 60_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 3; i++) r.push(ev(E1, i, i), i)
    r.push(mark(E2, 4), 4)
    for (let i = 1; i <= 2; i++) r.push(ev(E2, i, 4 + i), 4 + i)
    expect(ids((r.since(E1, 1, 10) as { entries: LogEntry[] }).entries)).toEqual(['a2', 'a3', 'markb', 'b1', 'b2'])
    expect(ids((r.since(E1, 3, 10) as { entries: LogEntry[] }).entries)).toEqual(['markb', 'b1', 'b2'])
    expect(ids((r.since(E2, 0, 10) as { entries: LogEntry[] }).entries)).toEqual(['b1', 'b2'])
  })

  it('an epoch it never saw, or an offset it never reached, is "unknown"', () => {
    const r = new ReplayRing(10, 60_000)
    r.startEpoch(E1)
    r.push(ev(E1, 1, 1), 1)
    expect(r.since(E2, 0, 1).kind).toBe('unknown')
    expect(r.since(E1, 2, 1).kind).toBe('unknown')
    expect(r.since(E1, -1, 1).kind).toBe('unknown')
  })

  it('a fully evicted old epoch still yields the later epochs after a gap', () => {
    const r = new ReplayRing(3, 60_000)
    r.startEpoch(E1)
    for (let i = 1; i <= 3; i++) r.push(ev(E1, i, i), i)
    r.push(mark(E2, 4), 4)
    for (let i = 1; i <= 3; i++) r.push(ev(E2, i, 4 + i), 4 + i)
    const res = r.since(E1, 1, 10)
    expect(res.kind).toBe('gap')
    expect(ids((res as { entries: LogEntry[] }).entries)).toEqual(['b1', 'b2', 'b3'])
  })

  it('grows to its bound and keeps working as a ring', () => {
    const r = new ReplayRing(1000, 1e9)
    r.startEpoch(E1)
    for (let i = 1; i <= 5_000; i++) r.push(ev(E1, i, i), i)
    expect(r.size).toBe(1000)
    expect(ids((r.since(E1, 4_997, 5_000) as { entries: LogEntry[] }).entries)).toEqual(['a4998', 'a4999', 'a5000'])
    expect(r.firstOffsetSince(E1, 4_990)).toBe(4_990)
  })
})
