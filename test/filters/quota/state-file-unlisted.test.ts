// A state file restored every tenant in it as if the config listed it: a file full of
// `allowUnlisted` ids (a week of an id flood, saved at shutdown) came back past the caps that keep
// room for the config's own tenants (75 % of the slots, 75 % of the budget rings), so after a
// restart listed tenants could find the table full and share the overflow slot's limits.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { OVERFLOW_RING, OVERFLOW_SLOT, QUOTA_SHARED_BYTES, RING_CAPACITY, TENANT_CAPACITY } from '../../../filters/quota/shared-table.ts'

const HOUR = 3_600_000
const LISTED = 250 // within the 255 budget rings the unlisted cap leaves (ring 0 is the overflow)

describe('state file restore and the unlisted caps', () => {
  it('unlisted tenants come back under the unlisted caps; every listed tenant keeps a slot and a ring', () => {
    const now = Date.now()
    const day = Math.floor(now / 86_400_000)
    const head = Math.floor(now / HOUR)
    // More unlisted tenants than the whole table takes, each with usage and a budget.
    const tenants = Array.from({ length: TENANT_CAPACITY }, (_, i) => ({
      tenant: `u${i}`,
      kinds: { graphql: { day, used: 7 } },
      budget: { bucketMs: HOUR, buckets: 24, head, total: 3, ring: [[head % 24, 3]] },
    }))
    const dir = mkdtempSync(join(tmpdir(), 'igw-state-unlisted-'))
    const stateFile = join(dir, 'quota-state.json')
    writeFileSync(stateFile, JSON.stringify({ version: 1, savedAt: now, tenants }))
    const listed = Object.fromEntries(Array.from({ length: LISTED }, (_, i) => [`t${i}`, {}]))
    const config = validateConfig({
      routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant', allowUnlisted: true }, { name: 'quota', kind: 'graphql' }] }],
      tenants: listed,
      quotas: { stateFile, defaults: { budget: { units: 1000, window: '1d', bucket: '1h' } } },
    })
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    const table = rt.table

    // What came back: usage kept for those restored, within the unlisted caps.
    let slots = 0
    let rings = 0
    for (let i = 0; i < TENANT_CAPACITY; i++) {
      const slot = table.peekSlot(`u${i}`)
      if (slot <= 0) continue
      slots++
      if (table.ringOf(slot, false) !== OVERFLOW_RING) rings++
    }
    expect(slots).toBeGreaterThan(0)
    expect(slots).toBeLessThanOrEqual(Math.floor(TENANT_CAPACITY * 0.75))
    expect(rings).toBeGreaterThan(0)
    expect(rings).toBeLessThanOrEqual(Math.floor(RING_CAPACITY * 0.75))

    // The config's tenants each get a slot and a budget ring of their own.
    for (const t of Object.keys(listed)) {
      const slot = table.slotOf(t, true)
      expect(slot, t).not.toBe(OVERFLOW_SLOT)
      expect(table.ringOf(slot, true), t).not.toBe(OVERFLOW_RING)
    }
  })
})
