// The rate a rule advertises (RateLimit-Policy, refusal messages) is the rate its bucket
// enforces: refills are whole micro-units per millisecond, so rates are honoured to 1/1000
// unit/s. 0.0005/s was advertised as written while it refilled at 0.001/s.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { resolveRule } from '../../../filters/quota/rules.ts'
import { ratePerMs } from '../../../filters/quota/token-bucket.ts'

const ruleRate = (rate: number): number => {
  const cfg = validateConfig({ routes: [{ name: 'g', upstream: 'http://127.0.0.1:9' }], tenants: { t: {} }, quotas: { tenants: { t: { graphql: { rate, burst: 5 } } } } })
  return resolveRule(cfg.quotas!, 't', 'graphql', undefined, undefined, false).rate
}

describe('advertised quota rates', () => {
  it('are the enforced ones', () => {
    for (const [written, advertised] of [
      [0.0005, 0.001],
      [0.0014, 0.001],
      [0.0016, 0.002],
      [33.3333, 33.333],
      [400, 400],
    ] as const) {
      const got = ruleRate(written)
      expect([written, got]).toEqual([written, advertised])
      expect(ratePerMs(got)).toBe(Math.max(1, ratePerMs(written))) // the same refill as before
    }
  })
})
