// A metric whose collect() callback throws (a gauge read at scrape time from state that broke)
// made prom-client's getMetricsAsJSON reject whole: in a worker thread that was an unhandled
// rejection, so the thread died at every scrape (with every count it held), and in the supervisor
// /metrics answered 500 with nothing in it. metricsJson collects each metric on its own: the bad
// one is left out, counted in igw_metrics_collect_errors_total{metric} and reported; the rest is
// served. Real prom-client registries and aggregation, as the admin port does it.
import { AggregatorRegistry, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { collectErrorsCounter, counter, gauge, metricsJson } from '../../proxy/metrics.ts'
import { metricSum } from '../helpers/proxy.ts'

function registryWithBadCollectors(): Registry {
  const r = new Registry()
  counter(r, { name: 'igw_good_total', help: 'a counter' }).inc(5)
  gauge(r, {
    name: 'igw_good_gauge',
    help: 'a gauge',
    collect() {
      this.set(2)
    },
  })
  gauge(r, {
    name: 'igw_sync_bad',
    help: 'throws',
    collect() {
      throw new Error('sync boom')
    },
  })
  gauge(r, {
    name: 'igw_async_bad',
    help: 'rejects',
    async collect() {
      throw new Error('async boom')
    },
  })
  return r
}

describe('a metric that fails to collect', () => {
  it('is left out of the answer; every other metric is served and the failure counted in the same answer', async () => {
    const r = registryWithBadCollectors()
    await expect(r.getMetricsAsJSON()).rejects.toThrow() // prom-client's own: the whole answer fails
    const errors = collectErrorsCounter(r)
    const seen: { metric: string; message: string }[] = []
    const json = await metricsJson(r, errors, (metric, err) => seen.push({ metric, message: (err as Error).message }))
    expect(json.map((m) => m.name).sort()).toEqual(['igw_good_gauge', 'igw_good_total', 'igw_metrics_collect_errors_total'])
    expect(seen.sort((a, b) => a.metric.localeCompare(b.metric))).toEqual([
      { metric: 'igw_async_bad', message: 'async boom' },
      { metric: 'igw_sync_bad', message: 'sync boom' },
    ])

    // Two sources (a worker thread and the supervisor), merged as the admin port merges them.
    const other = registryWithBadCollectors()
    const json2 = await metricsJson(other, collectErrorsCounter(other), () => undefined)
    const text = await AggregatorRegistry.aggregate([json, json2] as never).metrics()
    expect(metricSum(text, 'igw_good_total')).toBe(10)
    expect(metricSum(text, 'igw_metrics_collect_errors_total', 'metric="igw_sync_bad"')).toBe(2)
    expect(metricSum(text, 'igw_metrics_collect_errors_total', 'metric="igw_async_bad"')).toBe(2)
    expect(text).not.toContain('igw_sync_bad ')

    // The next scrape counts again; a healthy registry counts nothing.
    await metricsJson(r, errors, () => undefined)
    expect((await errors.get()).values.find((v) => v.labels.metric === 'igw_sync_bad')?.value).toBe(2)
    const healthy = new Registry()
    counter(healthy, { name: 'igw_good_total', help: 'a counter' }).inc()
    const calm = await metricsJson(healthy, collectErrorsCounter(healthy), () => expect.unreachable())
    expect(calm.find((m) => m.name === 'igw_metrics_collect_errors_total')?.values).toEqual([])
  })
})
