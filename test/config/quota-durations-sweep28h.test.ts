// Sweep 28h: budget durations written as strings (or numbers of ms) had no upper bound. A bucket
// longer than the time since 1970 ("20000000000000d", or 40000d) put every instant in bucket 0,
// which the shared table takes for a ring never used: reset on each request, so a hard-capped
// budget admitted everything. Now at most 366 days, refused with the field's path.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'

const route = { name: 'api', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant' }, { name: 'quota' }] }

function errorOf(budget: object, tenant = false): string {
  try {
    validateConfig({ tenants: { acme: {} }, quotas: tenant ? { tenants: { acme: { budget } } } : { defaults: { budget } }, routes: [route] })
    return ''
  } catch (err) {
    return (err as Error).message
  }
}

describe('budget durations are bounded (sweep 28h)', () => {
  it('refuses a window or bucket over 366 days, naming the field', () => {
    const huge = errorOf({ units: 10, window: '20000000000000d', bucket: '1000000000000d' })
    expect(huge).toContain('quotas.defaults.budget.window: expected at most 366 days')
    expect(huge).toContain('quotas.defaults.budget.bucket: expected at most 366 days')
    expect(errorOf({ units: 1, window: '80000d', bucket: '40000d', hardCap: true }, true)).toContain('quotas.tenants.acme.budget.window: expected at most 366 days')
    expect(errorOf({ units: 10, window: Number.MAX_SAFE_INTEGER, bucket: Number.MAX_SAFE_INTEGER })).toContain('quotas.defaults.budget.bucket: expected at most 366 days')
  })

  it('still takes a year-long window', () => {
    expect(errorOf({ units: 10, window: '366d', bucket: '12h' })).toBe('')
    expect(errorOf({ units: 10, window: 366 * 86_400_000, bucket: '1d' })).toBe('')
  })
})
