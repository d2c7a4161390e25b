// A worker thread that dies of an uncaught exception took with it every count it made since the
// last scrape: the supervisor keeps only a dead thread's last metrics answer, so requests it
// served after that answer vanished from igw_requests_total (undercounted for good). The thread
// now sends its counts as it dies, as it already sends its tenant usage.
// Real proxy (supervisor + worker thread), real backend, real HTTP client; the crash is a real
// uncaught exception in the worker's message handler (a null message).
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('a worker thread that crashes keeps the counts it made since the last scrape', () => {
  let echo: RawBackend
  beforeAll(async () => {
    echo = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await echo?.close()
  })

  it('requests served before and after a scrape are all counted once the thread has died and come back', async () => {
    const p: TestProxy = await startTestProxy({ workers: 1, routes: [{ name: 'api', upstream: echo.url, type: 'http' }] })
    const get = async (): Promise<number> => {
      const r = await request(`${p.url}/x`)
      await r.body.dump()
      return r.statusCode
    }
    try {
      for (let i = 0; i < 3; i++) expect(await get()).toBe(200)
      expect(metricSum(await p.metricsText(), 'igw_requests_total', 'route="api"')).toBe(3)
      for (let i = 0; i < 4; i++) expect(await get()).toBe(200) // counted after that scrape

      const before = p.threads()[0]!
      before.postMessage(null) // the worker's message handler reads msg.t: a TypeError, uncaught
      await waitUntil(async () => {
        const now = p.threads()[0]
        return now !== undefined && now !== before && metricSum(await p.metricsText(), 'igw_workers') === 1
      }, 20_000, 'worker restarted')
      expect(p.logs.find('uncaught exception in worker').length).toBe(1)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_worker_restarts_total')).toBe(1)
      expect(metricSum(text, 'igw_requests_total', 'route="api"')).toBe(7)
      expect(metricSum(text, 'igw_request_duration_seconds_count', 'route="api"')).toBe(7)

      expect(await get()).toBe(200) // the new thread counts on top
      expect(metricSum(await p.metricsText(), 'igw_requests_total', 'route="api"')).toBe(8)
    } finally {
      await p.close()
    }
  })
})
