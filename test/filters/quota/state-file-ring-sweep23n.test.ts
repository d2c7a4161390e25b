// A state file whose budget ring lists one bucket twice (a hand edit, two files merged): the
// restored total counted both entries but the bucket kept only the last, so when that bucket left
// the window the other entry's units stayed in the total for good — a phantom spend that kept a
// hard-capped tenant refused early until the ring went a whole window without a request.
import { describe, expect, it } from 'vitest'
import type { QuotaStateDocument } from '../../../config/quota-usage.ts'
import { add, advance, total, type BudgetShape } from '../../../filters/quota/rolling-budget.ts'
import { QUOTA_SHARED_BYTES, QuotaTable } from '../../../filters/quota/shared-table.ts'
import { restoreState } from '../../../filters/quota/state-file.ts'

const HOUR = 3_600_000
const shape: BudgetShape = { units: 100, windowMs: 24 * HOUR, bucketMs: HOUR, buckets: 24, thresholds: [0.8, 1] }

describe('state file budget ring (sweep 23n)', () => {
  it('a bucket listed twice is restored as their sum, and leaves the window whole', () => {
    const now = Date.now()
    const head = Math.floor(now / HOUR) - 2
    const doc = {
      version: 1,
      savedAt: now,
      tenants: [{ tenant: 't', kinds: {}, budget: { bucketMs: HOUR, buckets: 24, head, total: 10, ring: [[head % 24, 4], [head % 24, 6]] } }],
    } as unknown as QuotaStateDocument
    const table = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    expect(restoreState(table, doc, now)).toEqual({ restored: 1, skipped: 0 })
    const o = table.ringBase(table.ringOf(table.slotOf('t')))
    expect(total(table.f64, o)).toBe(10)
    // One more unit an hour later, then the restored bucket leaves the window: the unit is all that is left.
    advance(table.f64, o, (head + 1) * HOUR, shape)
    add(table.f64, o, 1)
    advance(table.f64, o, (head + 24) * HOUR, shape)
    expect(total(table.f64, o)).toBe(1)
  })
})
