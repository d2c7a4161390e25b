// A /metrics scrape in which one worker thread did not answer in time (its event loop busy with a
// CPU-heavy request) is served with that thread's last answer: the scrape must say so
// (igw_metrics_stale_workers, igw_worker_metrics_age_seconds{worker}, one rate-limited log line),
// and once the watchdog restarts the thread the counters neither drop nor double.
// Real `igw proxy --workers 2` child process, real backend, real DLP filter with a rule pack whose
// pattern backtracks for ever on one response.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BUILTIN_RULE_PACK } from '../../filters/dlp/rule-pack.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, spawnIgw, startTestProxy, writeTempConfig, type SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

/** A rule pack whose extra pattern backtracks 2^n times on `a`×n + "!c": n = 60 never ends. */
function stallingPack(n: number): string {
  const pack = JSON.parse(readFileSync(BUILTIN_RULE_PACK, 'utf8')) as { rules: unknown[] }
  pack.rules.push({ id: 'runaway.value', version: '1.0.0', type: 'email', pattern: `(?:a|a){1,${n}}!b`, validator: 'email' })
  const path = join(mkdtempSync(join(tmpdir(), 'igw-sweep19-')), 'pack.json')
  writeFileSync(path, JSON.stringify(pack))
  return path
}

async function scrape(adminUrl: string): Promise<{ text: string; ms: number; status: number; contentType: string }> {
  const t0 = Date.now()
  const res = await request(`${adminUrl}/metrics`)
  const text = await res.body.text()
  return { text, ms: Date.now() - t0, status: res.statusCode, contentType: String(res.headers['content-type']) }
}

/** The value of one series (exact label set as printed), or undefined when it is absent. */
function series(text: string, line: string): number | undefined {
  for (const l of text.split('\n')) if (l.startsWith(`${line} `)) return Number(l.slice(line.length + 1))
  return undefined
}

describe('a partial /metrics scrape is visible (sweep 19)', () => {
  let backend: RawBackend
  let igw: SpawnedIgw | undefined
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      if (req.url?.startsWith('/raw/')) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        res.end(req.url.startsWith('/raw/evil') ? `{"note":"${'a'.repeat(60)}!c b"}\n` : '{"note":"fine"}\n')
        return
      }
      echoHandler(req, res)
    })
  })
  afterAll(async () => {
    await igw?.stop('SIGKILL')
    await backend?.close()
  })

  it('a worker busy past the scrape deadline is reported stale with the age of its numbers, logged once, and fresh again after its restart', async () => {
    const cfg = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 2,
      log: { level: 'info' },
      // The busy thread is terminated and restarted after this long (Envoy's kill_timeout): the two
      // partial scrapes below take 2 × 2 s, which leaves 2 s of slack before the restart.
      workerWatchdog: { killAfterMs: 6_000 },
      shutdown: { drainTimeoutMs: 500 },
      dlp: { rulePack: stallingPack(60), policy: { allowedPresets: ['mask_basic'] } },
      routes: [{ name: 'a', upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/raw/' }] } }] }],
    })
    igw = await spawnIgw(['proxy', '--config', cfg])
    const client = new Client(igw.url, { keepAliveTimeout: 60_000, headersTimeout: 120_000, bodyTimeout: 120_000 })
    try {
      // A connection each, so the kernel spreads them over both threads.
      const N = 40
      for (let i = 0; i < N; i++) {
        const r = await request(`${igw.url}/x/${i}`, { reset: true })
        await r.body.dump()
        expect(r.statusCode).toBe(200)
      }
      const m0 = await scrape(igw.adminUrl)
      expect(m0.status).toBe(200)
      // Every thread answered: nothing stale, and each thread's numbers are fresh.
      expect(series(m0.text, 'igw_metrics_stale_workers')).toBe(0)
      expect(series(m0.text, 'igw_worker_metrics_age_seconds{worker="0"}')).toBe(0)
      expect(series(m0.text, 'igw_worker_metrics_age_seconds{worker="1"}')).toBe(0)
      // Which thread holds the keep-alive connection: the one whose request count moves.
      const r = await client.request({ path: '/raw/fine', method: 'GET' })
      await r.body.dump()
      expect(r.statusCode).toBe(200)
      const m1 = await scrape(igw.adminUrl)
      const total = N + 1
      expect(metricSum(m1.text, 'igw_requests_total', 'route="a"')).toBe(total)
      const busy = [0, 1].find((w) => metricSum(m1.text, 'igw_worker_requests_total', `worker="${w}"`) > metricSum(m0.text, 'igw_worker_requests_total', `worker="${w}"`))!
      const other = 1 - busy
      // That thread now runs a response through a pattern that does not finish.
      void client.request({ path: '/raw/evil', method: 'GET' }).then(
        (res) => res.body.dump(),
        () => undefined,
      )
      // The scrapes while it is busy: each waits out its 2 s deadline and serves the last answer.
      const partial: Awaited<ReturnType<typeof scrape>>[] = []
      for (let i = 0; i < 200 && partial.length < 2; i++) {
        const m = await scrape(igw.adminUrl)
        if (m.ms >= 1_900) partial.push(m)
      }
      expect(partial.length).toBe(2)
      for (const m of partial) {
        expect(m.status).toBe(200)
        expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/)
        // The busy thread's counts are still in (from its last answer): no counter drop.
        expect(metricSum(m.text, 'igw_requests_total', 'route="a"')).toBe(total)
        expect(series(m.text, 'igw_metrics_stale_workers')).toBe(1)
        expect(series(m.text, `igw_worker_metrics_age_seconds{worker="${other}"}`)).toBe(0)
        expect(series(m.text, `igw_worker_metrics_age_seconds{worker="${busy}"}`)).toBeGreaterThan(0)
        expect(m.text).toContain('# TYPE igw_metrics_stale_workers gauge')
        expect(m.text).toContain('# TYPE igw_worker_metrics_age_seconds gauge')
      }
      // The age grows with every scrape the thread misses (each of them waited 2 s).
      expect(series(partial[1]!.text, `igw_worker_metrics_age_seconds{worker="${busy}"}`)!).toBeGreaterThanOrEqual(series(partial[0]!.text, `igw_worker_metrics_age_seconds{worker="${busy}"}`)! + 1.5)
      // One warning for the partial scrapes, not one per scrape.
      const warnings = () => igw!.output.filter((l) => l.includes('metrics scrape is partial'))
      await waitUntil(() => warnings().length >= 1, 10_000, 'the partial-scrape warning')
      const w = JSON.parse(warnings()[0]!) as { level: string; stale: { worker: number; ageMs: number }[] }
      expect(w.level).toBe('warn')
      expect(w.stale).toEqual([{ worker: busy, ageMs: expect.any(Number) }])
      expect(warnings().length).toBe(1)
      // The watchdog restarts the thread: every thread answers again, and the counts it had are
      // neither lost nor counted twice.
      await waitUntil(
        async () => {
          const m = await scrape(igw!.adminUrl)
          return metricSum(m.text, 'igw_worker_stalls_total') === 1 && metricSum(m.text, 'igw_workers') === 2 && series(m.text, 'igw_metrics_stale_workers') === 0 && series(m.text, `igw_worker_metrics_age_seconds{worker="${busy}"}`) !== undefined
        },
        60_000,
        'the restarted thread to answer',
      )
      const after = await scrape(igw.adminUrl)
      expect(series(after.text, 'igw_metrics_stale_workers')).toBe(0)
      expect(metricSum(after.text, 'igw_requests_total', 'route="a"')).toBe(total)
      expect(warnings().length).toBe(1)
    } finally {
      await client.destroy().catch(() => undefined)
      await igw.stop('SIGKILL')
    }
  }, 150_000)
  it('a thread the watchdog stopped but that has not exited yet is still counted: no counter drop between its stop and its exit', async () => {
    const proxy = await startTestProxy({
      workers: 2,
      workerWatchdog: { killAfterMs: 1_000 },
      shutdown: { drainTimeoutMs: 500 },
      dlp: { rulePack: stallingPack(60), policy: { allowedPresets: ['mask_basic'] } },
      routes: [{ name: 'a', upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/raw/' }] } }] }],
    })
    const client = new Client(proxy.url, { keepAliveTimeout: 60_000, headersTimeout: 120_000, bodyTimeout: 120_000 })
    try {
      const N = 40
      for (let i = 0; i < N; i++) {
        const r = await request(`${proxy.url}/x/${i}`, { reset: true })
        await r.body.dump()
      }
      const m0 = await proxy.metricsText()
      const r = await client.request({ path: '/raw/fine', method: 'GET' })
      await r.body.dump()
      const m1 = await proxy.metricsText()
      const total = N + 1
      expect(metricSum(m1, 'igw_requests_total', 'route="a"')).toBe(total)
      const busy = [0, 1].find((w) => metricSum(m1, 'igw_worker_requests_total', `worker="${w}"`) > metricSum(m0, 'igw_worker_requests_total', `worker="${w}"`))!
      expect(metricSum(m1, 'igw_worker_requests_total', `worker="${busy}"`)).toBeGreaterThan(0)
      // A thread's termination is not instant (one blocked in native code runs on until that call
      // returns): this one takes 3 s from the watchdog's terminate() to its exit.
      const victim = proxy.threads()[busy]!
      const terminate = victim.terminate.bind(victim)
      victim.terminate = () => new Promise((resolve) => setTimeout(() => resolve(terminate()), 3_000))
      void client.request({ path: '/raw/evil', method: 'GET' }).then(
        (res) => res.body.dump(),
        () => undefined,
      )
      // Every scrape from the stall to the restart counts every request once: a drop, even for
      // one scrape, is a counter reset to Prometheus (rate() and increase() jump by the total).
      const seen: number[] = []
      let stale = 0
      await waitUntil(
        async () => {
          const m = await proxy.metricsText()
          seen.push(metricSum(m, 'igw_requests_total', 'route="a"'))
          if (series(m, 'igw_metrics_stale_workers') === 1) stale++
          return metricSum(m, 'igw_worker_restarts_total') === 1 && metricSum(m, 'igw_workers') === 2
        },
        60_000,
        'the watchdog restart',
      )
      expect(seen.length).toBeGreaterThan(1)
      expect(seen.filter((v) => v !== total)).toEqual([])
      expect(stale).toBeGreaterThan(0)
      expect(metricSum(await proxy.metricsText(), 'igw_requests_total', 'route="a"')).toBe(total)
    } finally {
      await client.destroy().catch(() => undefined)
      await proxy.close()
    }
  }, 120_000)
})
