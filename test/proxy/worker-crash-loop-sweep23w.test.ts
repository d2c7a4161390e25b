// A worker slot whose threads keep dying was restarted for ever (backoff capped at 5 s) while
// /healthz stayed 200 as long as another worker listened: liveness never failed, so the kubelet
// never restarted a pod that served with one worker in N gone for good. Now 5 deaths in a row of
// one slot, each within 30 s of its thread's start, fail /healthz with the reason, log it at
// error and show in igw_workers_crash_looping; a single crash stays harmless.
// Real in-process supervisor with real worker threads, real backend, real HTTP clients.
import type { Worker } from 'node:worker_threads'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('a worker slot in a crash loop', () => {
  let echo: RawBackend
  beforeAll(async () => {
    echo = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await echo?.close()
  })

  it('fails /healthz (with the reason, an error line and a gauge) after 5 deaths in a row; one crash does not', async () => {
    const proxy = await startTestProxy({ workers: 2, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    const healthz = async () => {
      const res = await fetch(`${proxy.adminUrl}/healthz`)
      return { status: res.status, body: (await res.json()) as { status: string; workers: number; crashLooping?: { worker: number }[] } }
    }
    try {
      const seen = new Set<Worker>()
      const crashSlot0 = async (): Promise<void> => {
        let t: Worker | undefined
        await waitUntil(() => {
          t = proxy.threads()[0]
          return t !== undefined && !seen.has(t)
        }, 10_000, 'a new thread in slot 0')
        seen.add(t!)
        await t!.terminate() // as abrupt as a crash
      }

      // One crash (a transient fault), and replacements that die as they start: up to four
      // deaths in a row leave liveness green while worker 1 serves.
      for (let i = 0; i < 4; i++) {
        await crashSlot0()
        expect(await healthz()).toMatchObject({ status: 200, body: { status: 'ok', workers: 1 } })
      }
      expect(metricSum(await proxy.metricsText(), 'igw_workers_crash_looping')).toBe(0)

      // The fifth death in a row: liveness fails, naming the slot, while worker 1 still serves.
      await crashSlot0()
      await expect.poll(async () => (await healthz()).status, { timeout: 5_000, interval: 50 }).toBe(503)
      const { body } = await healthz()
      expect(body.status).toBe('worker crash loop')
      expect(body.crashLooping?.map((c) => c.worker)).toEqual([0])
      expect(metricSum(await proxy.metricsText(), 'igw_workers_crash_looping')).toBe(1)
      expect(proxy.logs.lines.some((l) => l.level === 'error' && /crash looping/.test(String(l.msg)) && l.worker === 0)).toBe(true)
      const res = await fetch(`${proxy.url}/x`)
      expect(res.status).toBe(200)
      await res.text()
    } finally {
      await proxy.close()
    }
  }, 30_000)
})
