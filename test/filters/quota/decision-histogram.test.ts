// The quota decision histogram keeps its series in plain numbers and only builds prom-client's
// structures when scraped: it must print and aggregate across worker threads exactly like a
// prom-client Histogram fed the same observations.
import { AggregatorRegistry, Histogram, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { DECISION_BUCKETS, DecisionHistogram } from '../../../filters/quota/quota-metrics.ts'

function reference(registry: Registry): Histogram<'kind' | 'path'> {
  return new Histogram({ name: DecisionHistogram.NAME, help: 'Time to decide a request (path: local, redis, fallback)', labelNames: ['kind', 'path'], buckets: DECISION_BUCKETS, registers: [registry] })
}

// on, between and beyond the bounds
const VALUES = [0.00001, 0.00005, 0.00007, 0.0007, 0.005, 0.0051, 0.5, 0.6, 2]

describe('DecisionHistogram', () => {
  it('prints what prom-client prints for the same observations', async () => {
    const mine = new Registry()
    const theirs = new Registry()
    const h = new DecisionHistogram(mine)
    const ref = reference(theirs)
    for (const v of VALUES) {
      h.series('graphql', 'redis').observe(v)
      ref.labels('graphql', 'redis').observe(v)
    }
    h.series('ingest', 'local').observe(0.0002)
    ref.labels('ingest', 'local').observe(0.0002)
    const text = await mine.metrics()
    expect(text).toBe(await theirs.metrics())
    expect(text).toContain('igw_quota_decision_seconds_count{kind="graphql",path="redis"} 9')
  })

  it('aggregates across worker registries like prom-client', async () => {
    const [a, b, theirs] = [new Registry(), new Registry(), new Registry()]
    const ha = new DecisionHistogram(a)
    const hb = new DecisionHistogram(b)
    const ref = reference(theirs)
    for (const v of VALUES) {
      ha.series('graphql', 'redis').observe(v)
      ref.labels('graphql', 'redis').observe(v)
    }
    for (const v of VALUES.slice(0, 4)) {
      hb.series('graphql', 'redis').observe(v)
      hb.series('graphql', 'fallback').observe(v)
      ref.labels('graphql', 'redis').observe(v)
      ref.labels('graphql', 'fallback').observe(v)
    }
    const merged = await AggregatorRegistry.aggregate([await a.getMetricsAsJSON(), await b.getMetricsAsJSON()] as never).metrics()
    expect(merged).toBe(await AggregatorRegistry.aggregate([await theirs.getMetricsAsJSON()] as never).metrics())
    expect(merged).toContain('igw_quota_decision_seconds_count{kind="graphql",path="redis"} 13')
  })

  it('reset() empties every series, as prom-client does', async () => {
    const r = new Registry()
    const h = new DecisionHistogram(r)
    const s = h.series('graphql', 'redis')
    s.observe(0.001)
    h.reset()
    expect(await r.metrics()).not.toContain('igw_quota_decision_seconds_count')
    s.observe(0.002)
    expect(await r.metrics()).toContain('igw_quota_decision_seconds_count{kind="graphql",path="redis"} 1')
  })
})
