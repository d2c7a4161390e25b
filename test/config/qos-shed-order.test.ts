// quotas.qos.shedAt is priority shedding: a tier is shed at its fraction of load, so a gold
// threshold below bronze's would shed gold first. Such a document is refused, naming the path.
import { describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../config/load.ts'

const base = { routes: [{ name: 'g', upstream: 'http://127.0.0.1:9' }] }
const problemsOf = (shedAt: Record<string, number>): string[] => {
  try {
    validateConfig({ ...base, quotas: { qos: { shedAt } } })
    return []
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
}

describe('quotas.qos.shedAt order', () => {
  it('gold below silver or bronze, or bronze above the silver default, is refused with the path', () => {
    expect(problemsOf({ gold: 0.5 })).toEqual(['quotas.qos.shedAt: expected gold ≥ silver ≥ bronze (a higher tier is shed last)'])
    expect(problemsOf({ bronze: 0.9 })).toEqual(['quotas.qos.shedAt: expected gold ≥ silver ≥ bronze (a higher tier is shed last)'])
  })
  it('the defaults, equal thresholds and a lowered bronze are fine', () => {
    expect(problemsOf({})).toEqual([])
    expect(problemsOf({ gold: 0.8, silver: 0.8, bronze: 0.8 })).toEqual([])
    expect(problemsOf({ bronze: 0.5 })).toEqual([])
  })
})
