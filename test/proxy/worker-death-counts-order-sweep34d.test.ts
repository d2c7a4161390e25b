// A worker thread dying of an uncaught exception sends its last counts (a metrics message with id
// 0) once it has collected them, and keeps serving and answering scrapes meanwhile: a scrape's
// answer, read after those counts, can reach the supervisor first. The supervisor let the dying
// thread's message replace whatever it had, so the older counts were retired with the thread and
// the next scrape showed igw_requests_total (and every counter and histogram of that thread)
// lower than the one before: a counter reset to Prometheus. Seen in the chaos journey
// (chaos-journey-sweep34d): igw_worker_requests_total{worker="0"} 54 -> 51 across a crash.
// Real proxy, real thread and its real answers; only their order is arranged: the older answer
// is delivered last, on the thread's own message channel, as the race delivers it.
import { request } from 'undici'
import type { Worker } from 'node:worker_threads'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe("a dying thread's last counts arriving after a newer scrape answer", () => {
  let echo: RawBackend
  beforeAll(async () => {
    echo = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await echo?.close()
  })

  it('never take the counters back', async () => {
    const p = await startTestProxy({ workers: 1, routes: [{ name: 'api', upstream: echo.url, type: 'http' }] })
    try {
      const get = async () => (await request(`${p.url}/x`)).body.dump()
      const thread: Worker = p.threads()[0]!
      const answers: { t: string; id: number; data: unknown }[] = []
      thread.on('message', (m: { t: string; id: number; data: unknown }) => void (m.t === 'metrics' && answers.push(m)))
      for (let i = 0; i < 2; i++) await get()
      expect(metricSum(await p.metricsText(), 'igw_requests_total', 'route="api"')).toBe(2)
      const older = answers.at(-1)!
      await get()
      expect(metricSum(await p.metricsText(), 'igw_requests_total', 'route="api"')).toBe(3)

      // the dying thread's counts, collected before its last request ended, delivered last
      thread.emit('message', { t: 'metrics', id: 0, data: older.data })
      await thread.terminate()
      await waitUntil(async () => p.threads()[0] !== undefined && p.threads()[0] !== thread && metricSum(await p.metricsText(), 'igw_workers') === 1, 20_000, 'worker restarted')
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_requests_total', 'route="api"')).toBe(3)
      expect(metricSum(text, 'igw_request_duration_seconds_count', 'route="api"')).toBe(3)
    } finally {
      await p.close()
    }
  })
})
