// The quota filter's decision logic without sockets: bucket arithmetic, tenant calendars (DST),
// rolling budgets, the anomaly detector, the breaker, QoS ordering, rule resolution, and whole
// decisions against the shared table.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { localDayNumber, usedTodayFromState, type QuotaStateDocument } from '../../../config/quota-usage.ts'
import { observe, newAnomalyState, type AnomalySettings } from '../../../filters/quota/anomaly-detector.ts'
import { dayStart, dayWindow, TenantCalendar } from '../../../filters/quota/calendar.ts'
import { CircuitBreaker, BREAKER } from '../../../filters/quota/circuit-breaker.ts'
import { decideLocal, mirrorRedis, takePending, Verdict } from '../../../filters/quota/local-limiter.ts'
import { EventLoopLoad, shouldShed } from '../../../filters/quota/qos.ts'
import { add, advance, crossedThresholds, RING_F64, retryAt, total, type BudgetShape } from '../../../filters/quota/rolling-budget.ts'
import { resolveRule, RULE_BUDGET, RULE_DAILY, RULE_RATE } from '../../../filters/quota/rules.ts'
import { QUOTA_SHARED_BYTES, QuotaTable, OVERFLOW_SLOT } from '../../../filters/quota/shared-table.ts'
import { restoreState, snapshotState } from '../../../filters/quota/state-file.ts'
import { MICRO, msUntilAvailable, ratePerMs, refill, take, toMicro } from '../../../filters/quota/token-bucket.ts'

const iso = (ms: number) => new Date(ms).toISOString()
const at = (s: string) => Date.parse(s)

describe('token bucket (fixed point)', () => {
  const perMs = ratePerMs(10) // 10 units/s
  const cap = toMicro(5)

  it('refills exactly per millisecond and caps at the burst', () => {
    expect(perMs).toBe(10_000) // micro-units per ms
    expect(refill(0, 1000, 1100, perMs, cap)).toBe(1 * MICRO) // 100 ms at 10/s = 1 unit
    expect(refill(0, 1000, 1001, perMs, cap)).toBe(0.01 * MICRO)
    expect(refill(toMicro(4.5), 0, 10_000, perMs, cap)).toBe(cap)
  })

  it('a clock that goes back refills nothing and takes nothing', () => {
    expect(refill(toMicro(2), 5000, 4000, perMs, cap)).toBe(toMicro(2))
  })

  it('takes cost > 1 or refuses without consuming', () => {
    expect(take(cap, 0, 0, perMs, cap, toMicro(3))).toBe(toMicro(2))
    const refused = take(toMicro(2), 0, 0, perMs, cap, toMicro(3))
    expect(refused).toBeLessThan(0)
    expect(-1 - refused).toBe(toMicro(2)) // the refilled tokens, untouched
  })

  it('fractional rates stay exact integers', () => {
    const half = ratePerMs(0.5)
    expect(half).toBe(500)
    let tokens = 0
    let last = 0
    for (let t = 1; t <= 2000; t += 7) {
      tokens = refill(tokens, last, t, half, toMicro(10))
      last = t
      expect(Number.isInteger(tokens)).toBe(true)
    }
    expect(refill(tokens, last, 2000, half, toMicro(10))).toBe(toMicro(1) - 0) // 2 s × 0.5/s
  })

  it('knows how long until a cost fits', () => {
    expect(msUntilAvailable(toMicro(1), toMicro(3), perMs)).toBe(200)
    expect(msUntilAvailable(toMicro(3), toMicro(3), perMs)).toBe(0)
    expect(msUntilAvailable(0, toMicro(1), 0)).toBe(Number.POSITIVE_INFINITY)
  })
})

describe('tenant calendars: midnight in the tenant zone, DST included', () => {
  // Expected instants come from the tz database (when the local date changes), not from the code.
  const cases: [string, string, string, string, number][] = [
    ['UTC', '2024-06-01T12:00:00Z', '2024-06-01T00:00:00.000Z', '2024-06-02T00:00:00.000Z', 24],
    ['America/New_York', '2024-03-10T12:00:00Z', '2024-03-10T05:00:00.000Z', '2024-03-11T04:00:00.000Z', 23], // spring forward
    ['America/New_York', '2024-11-03T12:00:00Z', '2024-11-03T04:00:00.000Z', '2024-11-04T05:00:00.000Z', 25], // fall back
    ['Europe/Berlin', '2024-03-31T12:00:00Z', '2024-03-30T23:00:00.000Z', '2024-03-31T22:00:00.000Z', 23],
    ['Europe/Berlin', '2024-10-27T12:00:00Z', '2024-10-26T22:00:00.000Z', '2024-10-27T23:00:00.000Z', 25],
    ['Asia/Kolkata', '2024-10-06T12:00:00Z', '2024-10-05T18:30:00.000Z', '2024-10-06T18:30:00.000Z', 24],
    ['Australia/Lord_Howe', '2024-10-06T12:00:00Z', '2024-10-05T13:30:00.000Z', '2024-10-06T13:00:00.000Z', 23.5], // 30-minute DST
    ['Pacific/Kiritimati', '2024-10-06T12:00:00Z', '2024-10-06T10:00:00.000Z', '2024-10-07T10:00:00.000Z', 24], // UTC+14
    ['America/Havana', '2024-03-10T12:00:00Z', '2024-03-10T05:00:00.000Z', '2024-03-11T04:00:00.000Z', 23], // midnight does not exist
    ['America/Sao_Paulo', '2018-02-17T12:00:00Z', '2018-02-17T02:00:00.000Z', '2018-02-18T03:00:00.000Z', 25], // 23:00 twice
  ]
  it.each(cases)('%s around %s', (tz, now, start, end, hours) => {
    const w = dayWindow(tz, at(now))
    expect(iso(w.start)).toBe(start)
    expect(iso(w.end)).toBe(end)
    expect((w.end - w.start) / 3_600_000).toBe(hours)
    expect(localDayNumber(tz, w.start - 1)).toBe(w.day - 1)
    expect(localDayNumber(tz, w.start)).toBe(w.day)
    expect(localDayNumber(tz, w.end - 1)).toBe(w.day)
    expect(dayStart(tz, w.day + 1)).toBe(w.end)
  })

  it('a cached calendar rolls over at the tenant midnight and reports the time left', () => {
    const c = new TenantCalendar('America/New_York')
    const before = at('2024-03-11T03:59:59.999Z') // 23:59:59.999 EDT on the 23 h day
    const d = c.dayOf(before)
    expect(c.msToEndOfDay(before)).toBe(1)
    expect(c.dayOf(before + 1)).toBe(d + 1)
    expect(c.msToEndOfDay(before + 1)).toBe(24 * 3_600_000)
  })
})

describe('rolling budget ring', () => {
  const shape: BudgetShape = { units: 100, windowMs: 4 * 3_600_000, bucketMs: 3_600_000, buckets: 4, thresholds: [0.8, 1] }
  const H = 3_600_000
  const t0 = 1_000 * H // an hour boundary

  it('sums the window and forgets buckets as they leave it', () => {
    const f = new Float64Array(RING_F64)
    advance(f, 0, t0, shape)
    add(f, 0, 10)
    advance(f, 0, t0 + H, shape)
    add(f, 0, 20)
    advance(f, 0, t0 + 3 * H + 5, shape)
    add(f, 0, 30)
    expect(total(f, 0)).toBe(60)
    advance(f, 0, t0 + 4 * H, shape) // the first bucket (10) leaves
    expect(total(f, 0)).toBe(50)
    advance(f, 0, t0 + 5 * H, shape)
    expect(total(f, 0)).toBe(30)
    advance(f, 0, t0 + 20 * H, shape) // a gap longer than the window
    expect(total(f, 0)).toBe(0)
  })

  it('a changed window shape keeps the usage as one lump (a reload never forgives usage)', () => {
    const f = new Float64Array(RING_F64)
    advance(f, 0, t0, shape)
    add(f, 0, 70)
    advance(f, 0, t0 + 10, { ...shape, buckets: 2, windowMs: 2 * H })
    expect(total(f, 0)).toBe(70)
    advance(f, 0, t0 + 2 * H, { ...shape, buckets: 2, windowMs: 2 * H })
    expect(total(f, 0)).toBe(0)
  })

  it('tells when enough old usage leaves the window for a rejected cost', () => {
    const f = new Float64Array(RING_F64)
    advance(f, 0, t0, shape)
    add(f, 0, 40)
    advance(f, 0, t0 + H, shape)
    add(f, 0, 60)
    const now = t0 + H + 123
    expect(retryAt(f, 0, now, shape, 10)).toBe(t0 + 4 * H) // the first bucket (40) leaves at t0 + 4h
    expect(retryAt(f, 0, now, shape, 50)).toBe(t0 + 5 * H) // needs the second one too
    expect(retryAt(f, 0, now, shape, 50)).toBe(t0 + 5 * H) // cached for that cost until it passes
    expect(retryAt(f, 0, now, shape, 10)).toBe(t0 + 4 * H)
    const g = new Float64Array(RING_F64)
    advance(g, 0, t0, shape)
    expect(retryAt(g, 0, t0, shape, 500)).toBe(t0 + shape.windowMs) // never fits: a window
  })

  it('thresholds fire once per window, in order, and the hard-cap exhaustion counts as 100%', () => {
    const f = new Float64Array(RING_F64)
    advance(f, 0, t0, shape)
    add(f, 0, 79)
    expect(crossedThresholds(f, 0, t0, shape, false)).toBe(0)
    add(f, 0, 1)
    expect(crossedThresholds(f, 0, t0, shape, false)).toBe(0b01)
    add(f, 0, 5)
    expect(crossedThresholds(f, 0, t0 + 1, shape, false)).toBe(0) // 80% already fired this window
    expect(crossedThresholds(f, 0, t0 + 2, shape, true)).toBe(0b10) // a rejection at 85%: exhausted
    expect(crossedThresholds(f, 0, t0 + 3, shape, true)).toBe(0)
    expect(crossedThresholds(f, 0, t0 + shape.windowMs, shape, false)).toBe(0b01) // a window later, still above 80%
  })
})

describe('anomaly detector (EWMA z-score with hysteresis)', () => {
  const cfg: AnomalySettings = { alpha: 0.1, zThreshold: 4, clearZ: 2, clearIntervals: 3, warmupIntervals: 6, minRequests: 20 }
  const baseline = [50, 53, 47, 51, 49, 52, 48, 50, 51, 49, 50, 52]

  it('a steady tenant never alerts; a spike alerts once and a sustained one does not re-alert', () => {
    const s = newAnomalyState()
    for (const x of baseline) expect(observe(s, x, cfg).change).toBeUndefined()
    const spike = observe(s, 200, cfg)
    expect(spike.change).toBe('alert')
    expect(spike.z).toBeGreaterThan(4)
    const again = [210, 190, 205, 220].map((x) => observe(s, x, cfg).change)
    expect(again).not.toContain('alert')
  })

  it('hovering at the threshold does not flap; quiet intervals re-arm it', () => {
    const s = newAnomalyState()
    for (const x of baseline) observe(s, x, cfg)
    expect(observe(s, 120, cfg).change).toBe('alert')
    // Around the threshold: never two alerts, because clearing needs 3 intervals under z=2.
    const changes = [50, 120, 50, 125, 50].map((x) => observe(s, x, cfg).change)
    expect(changes.filter((c) => c === 'alert')).toHaveLength(0)
    const quiet = [50, 50, 50, 50].map((x) => observe(s, x, cfg).change)
    expect(quiet).toContain('clear')
    for (let i = 0; i < 20; i++) observe(s, 50, cfg)
    expect(observe(s, 400, cfg).change).toBe('alert')
  })

  it('no alerts during warm-up or below minRequests', () => {
    const s = newAnomalyState()
    for (let i = 0; i < 5; i++) observe(s, 1, cfg)
    expect(observe(s, 19, cfg).change).toBeUndefined() // z is huge, but 19 < minRequests
    const w = newAnomalyState()
    observe(w, 10, cfg)
    expect(observe(w, 500, cfg).change).toBeUndefined() // still warming up
  })
})

describe('circuit breaker', () => {
  it('opens after N failures, lets one probe through after openMs, closes on success (a recovery)', () => {
    const b = new CircuitBreaker(3, 1000)
    expect(b.allow(0)).toBe(true)
    expect(b.failure(0)).toBe(false)
    b.failure(1)
    expect(b.failure(2)).toBe(true)
    expect(b.state).toBe(BREAKER.open)
    expect(b.allow(500)).toBe(false)
    expect(b.retryInMs(500)).toBe(502)
    expect(b.allow(1002)).toBe(true) // the probe
    expect(b.allow(1003)).toBe(false) // only one
    b.failure(1004)
    expect(b.state).toBe(BREAKER.open)
    expect(b.allow(2005)).toBe(true)
    expect(b.success()).toBe(true)
    expect(b.recoveries).toBe(1)
    expect(b.state).toBe(BREAKER.closed)
    expect(b.success()).toBe(false)
  })

  it('one stall (many calls failing together) is not an outage: failures must span afterMs', () => {
    const b = new CircuitBreaker(3, 1000, 50)
    for (let i = 0; i < 10; i++) b.failure(100 + i) // ten calls time out within 10 ms
    expect(b.state).toBe(BREAKER.closed)
    b.success()
    b.failure(200)
    b.failure(230)
    expect(b.failure(250)).toBe(true) // three in a row over 50 ms without a success
    expect(b.state).toBe(BREAKER.open)
  })

  it('a success between failures resets the count', () => {
    const b = new CircuitBreaker(3, 1000)
    b.failure(0)
    b.failure(0)
    b.success()
    b.failure(0)
    b.failure(0)
    expect(b.state).toBe(BREAKER.closed)
  })
})

describe('QoS shedding order', () => {
  const shedAt = { gold: 1, silver: 0.85, bronze: 0.7 }
  it('bronze first, then silver; gold while capacity remains', () => {
    const shed = (inflight: number, tier: keyof typeof shedAt) => shouldShed(inflight, 100, 0, 0, shedAt[tier])
    expect([shed(69, 'bronze'), shed(70, 'bronze'), shed(84, 'silver'), shed(85, 'silver'), shed(99, 'gold'), shed(100, 'gold')]).toEqual([false, true, false, true, false, true])
  })
  it('event-loop delay counts as load too', () => {
    expect(shouldShed(0, 100, 40, 50, 0.7)).toBe(true) // 40/50 = 0.8 ≥ bronze
    expect(shouldShed(0, 100, 40, 50, 0.85)).toBe(false)
    expect(shouldShed(0, 0, 60, 50, 1)).toBe(true)
  })
  it('the event-loop monitor sees a blocked loop', async () => {
    const m = new EventLoopLoad()
    m.start()
    try {
      for (let i = 0; i < 6; i++) {
        const until = performance.now() + 60
        while (performance.now() < until) {}
        await new Promise((r) => setTimeout(r, 5))
      }
      // The monitor's own 0.5 s sampling may have taken (and reset) part of the window on a slow
      // machine: what it saw then is in delayMs.
      const seenByTimer = m.delayMs
      expect(Math.max(seenByTimer, m.sample())).toBeGreaterThan(30)
      // Idle again: the delay falls back (polled: on a loaded machine one window can still be slow).
      await expect.poll(() => m.sample(), { timeout: 5_000, interval: 200 }).toBeLessThan(30)
    } finally {
      m.stop()
    }
  })
})

describe('rule resolution', () => {
  const cfg = validateConfig({
    routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    tenants: { acme: { tier: 'gold' }, tiny: { tier: 'bronze' }, free: {} },
    quotas: {
      defaults: { graphql: { rate: 10, burst: 20, limitPerDay: 1000 }, budget: { units: 5000 } },
      tenants: { acme: { graphql: { limitPerDay: 50_000 } }, free: { graphql: { rate: null, shadow: true }, budget: null } },
    },
  }).quotas
  it('inherited rates scale by tier; own values are taken as written; null removes a limit', () => {
    const acme = resolveRule(cfg, 'acme', 'graphql', 'gold', 'UTC', false)
    expect([acme.rate, acme.burst, acme.limitPerDay]).toEqual([20, 40, 50_000])
    const tiny = resolveRule(cfg, 'tiny', 'graphql', 'bronze', 'UTC', false)
    expect([tiny.rate, tiny.burst, tiny.limitPerDay]).toEqual([5, 10, 1000])
    expect(tiny.budget?.units).toBe(5000)
    const free = resolveRule(cfg, 'free', 'graphql', 'silver', 'UTC', false)
    expect(free.rate).toBe(0)
    expect(free.budget).toBeUndefined()
    expect(free.shadowMask & RULE_DAILY).toBe(RULE_DAILY)
    expect(resolveRule(cfg, 'acme', 'ingest', 'gold', 'UTC', false).metered).toBe(true) // the default budget covers all kinds
  })
  it('a rate without a burst gets one second worth (at least 1)', () => {
    const q = validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }], quotas: { defaults: { ingest: { rate: 0.2 } } } }).quotas
    expect(resolveRule(q, undefined, 'ingest', undefined, undefined, false).burst).toBe(1)
  })
})

describe('decisions on the shared table', () => {
  const quotas = validateConfig({
    routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }],
    quotas: { defaults: { graphql: { rate: 1, burst: 10, limitPerDay: 25 }, budget: { units: 30, hardCap: true, window: '1h', bucket: '1m' } } },
  }).quotas
  const rule = resolveRule(quotas, 't', 'graphql', 'silver', 'UTC', false)
  const now = at('2026-03-02T10:00:00Z')
  const day = localDayNumber('UTC', now)

  it('bucket, daily quota and budget decide together; a rejection consumes nothing', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = table.slotOf('t')
    const v = new Verdict()
    let admitted = 0
    for (let i = 0; i < 15; i++) if (decideLocal(table, slot, rule, 1, now, day, false, 1, v).allowed) admitted++
    expect(admitted).toBe(10)
    expect(v.reason).toBe(RULE_RATE)
    expect(v.retryMs).toBe(1000)
    // 20 s later the bucket has 10 again; the daily quota (25) stops at 25 in all
    let later = 0
    for (let i = 0; i < 20; i++) if (decideLocal(table, slot, rule, 1, now + 20_000, day, false, 1, v).allowed) later++
    expect(later).toBe(10)
    const third = decideLocal(table, slot, rule, 6, now + 40_000, day, false, 1, v)
    expect(third.allowed).toBe(false)
    expect(third.reason).toBe(RULE_DAILY) // 20 + 6 > 25
    expect(decideLocal(table, slot, rule, 5, now + 40_000, day, false, 1, v).allowed).toBe(true)
    // a new tenant day resets the daily figure but not the budget (30 over the hour)
    const next = decideLocal(table, slot, rule, 6, now + 60_000, day + 1, false, 1, v)
    expect(next.allowed).toBe(false)
    expect(next.reason).toBe(RULE_BUDGET)
    expect(next.budgetTotal).toBe(25)
    expect(decideLocal(table, slot, rule, 5, now + 60_000, day + 1, false, 1, v).allowed).toBe(true)
    expect(v.used).toBe(5)
  })

  it('shadow rules decide and count but let the request through', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const shadow = resolveRule(quotas, 't', 'graphql', 'silver', 'UTC', true)
    const slot = table.slotOf('t')
    const v = new Verdict()
    for (let i = 0; i < 10; i++) decideLocal(table, slot, shadow, 1, now, day, false, 1, v)
    const r = decideLocal(table, slot, shadow, 1, now, day, false, 1, v)
    expect(r.allowed).toBe(true)
    expect(r.would & RULE_RATE).toBe(RULE_RATE)
  })

  it('during an outage: continue from the last Redis figures, divided among live proxies', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = table.slotOf('t')
    // Redis said: 6 tokens left, 15 used today, budget total 15.
    mirrorRedis(table, slot, rule, now, day, 6 * MICRO, 15, 15)
    const v = new Verdict()
    let admitted = 0
    for (let i = 0; i < 10; i++) if (decideLocal(table, slot, rule, 1, now, day, true, 1 / 2, v).allowed) admitted++
    expect(admitted).toBe(3) // our half of the 6 tokens left
    expect(takePending(table, slot, rule.kindIndex)).toBe(3) // reported to Redis when it is back
    expect(takePending(table, slot, rule.kindIndex)).toBe(0)
    mirrorRedis(table, slot, rule, now, day, 10 * MICRO, 24, 24)
    let after = 0
    for (let i = 0; i < 10; i++) if (decideLocal(table, slot, rule, 1, now + 1, day, true, 1, v).allowed) after++
    expect(after).toBe(1) // fail-open scale 1: the daily quota (25 - 24) stops it
  })

  it('the table is bounded: tenants beyond it share the overflow slot', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slots = new Set<number>()
    for (let i = 0; i < 5000; i++) slots.add(table.slotOf(`tenant-${i}`))
    expect(slots.has(OVERFLOW_SLOT)).toBe(true)
    expect(slots.size).toBeLessThanOrEqual(4096)
    expect(table.slotOf('x'.repeat(200))).toBe(OVERFLOW_SLOT)
    expect(table.slotOf('tenant-1')).toBe(table.slotOf('tenant-1'))
  })

  it('a state snapshot restores usedToday and budgets into a fresh table', () => {
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = table.slotOf('t')
    const v = new Verdict()
    for (let i = 0; i < 7; i++) decideLocal(table, slot, rule, 1, now, day, false, 1, v)
    const doc = JSON.parse(JSON.stringify(snapshotState(table, now))) as QuotaStateDocument
    expect(usedTodayFromState(doc, 't', 'graphql', 'UTC', now)).toBe(7)
    expect(usedTodayFromState(doc, 't', 'graphql', 'UTC', now + 86_400_000)).toBe(0)
    // a damaged file (the control plane reads it as found) counts as no usage, never a throw
    const damaged = { version: 1, tenants: [null, { tenant: 't', kinds: null }, { tenant: 'u', kinds: { graphql: { day: 1, used: 'lots' } } }] } as unknown as QuotaStateDocument
    expect(usedTodayFromState(damaged, 't', 'graphql', 'UTC', now)).toBe(0)
    expect(usedTodayFromState(damaged, 'u', 'graphql', 'UTC', now)).toBe(0)
    const fresh = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    restoreState(fresh, doc)
    const r = decideLocal(fresh, fresh.slotOf('t'), rule, 1, now + 1, day, false, 1, v)
    expect(r.used).toBe(8)
    expect(r.budgetTotal).toBe(8)
  })
})
