// PlainCounter and PlainHistogram keep hot-path series in plain numbers; they must print and
// aggregate across worker registries exactly like prom-client's Counter and Histogram fed the
// same increments and observations (the admin port merges worker registries).
import { AggregatorRegistry, Counter, Histogram, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { LATENCY_BUCKETS, PlainCounter, PlainHistogram } from '../../proxy/metrics.ts'

const COUNTER = { name: 'igw_test_requests_total', help: 'Requests by route and status', labelNames: ['route', 'status'] as const }
const HISTOGRAM = { name: 'igw_test_duration_seconds', help: 'Durations by route', labelNames: ['route'] as const, buckets: LATENCY_BUCKETS }
const VALUES = [0.0001, 0.00025, 0.0003, 0.004, 0.01, 0.7, 30, 31]

const merge = async (registries: Registry[]) => AggregatorRegistry.aggregate(await Promise.all(registries.map((r) => r.getMetricsAsJSON())) as never).metrics()

describe('PlainCounter', () => {
  it('prints what prom-client prints, through series() and through labels()', async () => {
    const [mine, theirs] = [new Registry(), new Registry()]
    const c = new PlainCounter(mine, COUNTER)
    const ref = new Counter({ ...COUNTER, labelNames: [...COUNTER.labelNames], registers: [theirs] })
    const s = c.series('graphql', '200')
    for (let i = 0; i < 5; i++) s.inc()
    c.labels('graphql', '200').inc(2)
    c.labels({ route: 'export', status: '403' }).inc()
    c.series('graphql', '500') // resolved but never incremented: not printed, like prom-client
    ref.labels('graphql', '200').inc(7)
    ref.labels('export', '403').inc()
    const text = await mine.metrics()
    expect(text).toBe(await theirs.metrics())
    expect(text).toContain('igw_test_requests_total{route="graphql",status="200"} 7')
    expect(text).not.toContain('status="500"')
  })

  it('aggregates across worker registries like prom-client, and reset() empties it', async () => {
    const [a, b, theirs] = [new Registry(), new Registry(), new Registry()]
    const ref = new Counter({ ...COUNTER, labelNames: [...COUNTER.labelNames], registers: [theirs] })
    new PlainCounter(a, COUNTER).series('graphql', '200').inc(3)
    const cb = new PlainCounter(b, COUNTER)
    cb.series('graphql', '200').inc(4)
    cb.series('graphql', '429').inc()
    ref.labels('graphql', '200').inc(7)
    ref.labels('graphql', '429').inc()
    const merged = await merge([a, b])
    expect(merged).toBe(await merge([theirs]))
    expect(merged).toContain('igw_test_requests_total{route="graphql",status="200"} 7')
    cb.reset()
    expect(await b.metrics()).not.toContain('igw_test_requests_total{')
  })
})

describe('PlainHistogram', () => {
  it('prints and aggregates what prom-client does, observations on, between and beyond the bounds', async () => {
    const [a, b, theirs] = [new Registry(), new Registry(), new Registry()]
    const ha = new PlainHistogram(a, HISTOGRAM)
    const hb = new PlainHistogram(b, HISTOGRAM)
    const ref = new Histogram({ ...HISTOGRAM, labelNames: [...HISTOGRAM.labelNames], buckets: [...HISTOGRAM.buckets], registers: [theirs] })
    for (const v of VALUES) {
      ha.series('graphql').observe(v)
      ref.labels('graphql').observe(v)
    }
    for (const v of VALUES.slice(2, 6)) {
      hb.labels('graphql').observe(v)
      hb.series('export').observe(v)
      ref.labels('graphql').observe(v)
      ref.labels('export').observe(v)
    }
    const single = new Registry()
    const hs = new PlainHistogram(single, HISTOGRAM)
    const refSingle = new Registry()
    const r2 = new Histogram({ ...HISTOGRAM, labelNames: [...HISTOGRAM.labelNames], buckets: [...HISTOGRAM.buckets], registers: [refSingle] })
    for (const v of VALUES) {
      hs.series('graphql').observe(v)
      r2.labels('graphql').observe(v)
    }
    expect(await single.metrics()).toBe(await refSingle.metrics())
    const merged = await merge([a, b])
    expect(merged).toBe(await merge([theirs]))
    expect(merged).toContain('igw_test_duration_seconds_count{route="graphql"} 12')
    expect(merged).toContain('igw_test_duration_seconds_bucket{le="0.00025",route="graphql"} 2')
  })
})
