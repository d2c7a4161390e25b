// Metrics aggregation, upstream health gauges and usage collection against the real proxy
// (worker threads, admin port, real upstreams): the cases where a thread stalls, dies or answers
// late while the supervisor is collecting from it.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { BUILTIN_RULE_PACK } from '../../filters/dlp/rule-pack.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

/** A rule pack whose extra pattern backtracks 2^n times on `a`×n + "!c": n = 60 never ends. */
function stallingPack(n: number): string {
  const pack = JSON.parse(readFileSync(BUILTIN_RULE_PACK, 'utf8')) as { rules: unknown[] }
  pack.rules.push({ id: 'runaway.value', version: '1.0.0', type: 'email', pattern: `(?:a|a){1,${n}}!b`, validator: 'email' })
  const path = join(mkdtempSync(join(tmpdir(), 'igw-sweep14d-')), 'pack.json')
  writeFileSync(path, JSON.stringify(pack))
  return path
}

async function get(url: string, init?: Parameters<typeof request>[1]): Promise<{ status: number; body: string }> {
  const res = await request(url, init)
  return { status: res.statusCode, body: await res.body.text() }
}

describe('metrics and usage when a worker thread stalls, dies or answers late (sweep 14d)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      if (req.url?.startsWith('/raw/')) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        res.end(req.url.startsWith('/raw/evil') ? `{"note":"${'a'.repeat(Number(new URL(req.url, 'http://x').searchParams.get('n') ?? 60))}!c b"}\n` : '{"note":"fine"}\n')
        return
      }
      if (req.url?.startsWith('/slow')) {
        setTimeout(() => res.end('slow done'), 500)
        return
      }
      echoHandler(req, res)
    })
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('a worker that dies after answering a scrape is not counted twice in that scrape (no counter drop in the next)', async () => {
    const proxy = await startTestProxy({
      workers: 2,
      workerWatchdog: { killAfterMs: 0 }, // the stalled thread stays stalled until the test ends it
      shutdown: { drainTimeoutMs: 500 },
      dlp: { rulePack: stallingPack(60), policy: { allowedPresets: ['mask_basic'] } },
      routes: [{ name: 'a', upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/raw/' }] } }] }],
    })
    const client = new Client(proxy.url, { keepAliveTimeout: 60_000, headersTimeout: 120_000, bodyTimeout: 120_000 })
    let stalled: number | undefined
    try {
      // A connection each, so the kernel spreads them over both threads.
      const N = 40
      for (let i = 0; i < N; i++) expect((await get(`${proxy.url}/x/${i}`, { reset: true })).status).toBe(200)
      // Which thread holds the keep-alive connection: the one whose request count moves.
      const m0 = await proxy.metricsText()
      expect((await get(`${proxy.url}/raw/fine`, { dispatcher: client })).status).toBe(200)
      const m1 = await proxy.metricsText() // every thread answered: their last answers hold all N + 1
      const total = N + 1
      expect(metricSum(m1, 'igw_requests_total', 'route="a"')).toBe(total)
      stalled = [0, 1].find((w) => metricSum(m1, 'igw_worker_requests_total', `worker="${w}"`) > metricSum(m0, 'igw_worker_requests_total', `worker="${w}"`))!
      const other = 1 - stalled
      expect(metricSum(m1, 'igw_worker_requests_total', `worker="${other}"`)).toBeGreaterThan(0)
      // Wedge that thread: it stops answering scrapes, which then wait out their 2 s deadline.
      void client.request({ path: '/raw/evil?n=60', method: 'GET' }).then(
        (r) => r.body.dump(),
        () => undefined,
      )
      await waitUntil(
        async () => {
          const t0 = Date.now()
          await proxy.metricsText()
          return Date.now() - t0 >= 1_900
        },
        30_000,
        'the thread to stall',
      )
      // The other thread answers the next scrape at once, then dies while the scrape still waits.
      const victim = proxy.threads()[other]!
      const onMessage = (m: { t: string }): void => {
        if (m.t !== 'metrics') return
        victim.off('message', onMessage)
        void victim.terminate()
      }
      victim.on('message', onMessage)
      const during = await proxy.metricsText()
      // Every scrape now waits out the wedged thread's 2 s: one per look, and the first after the
      // restart is the one checked for a drop.
      let after = ''
      await waitUntil(
        async () => {
          after = await proxy.metricsText()
          return metricSum(after, 'igw_worker_restarts_total') === 1 && metricSum(after, 'igw_workers') === 2
        },
        30_000,
        'the restart',
      )
      // Every scrape counts each request once: never more than were served, never going down.
      expect(metricSum(during, 'igw_requests_total', 'route="a"')).toBe(total)
      expect(metricSum(during, 'igw_request_duration_seconds_count', 'route="a"')).toBe(total)
      expect(metricSum(after, 'igw_requests_total', 'route="a"')).toBe(total)
      expect(metricSum(after, 'igw_request_duration_seconds_count', 'route="a"')).toBe(total)
    } finally {
      if (stalled !== undefined) await proxy.threads()[stalled]?.terminate()
      await client.destroy().catch(() => undefined)
      await proxy.close()
    }
  }, 120_000)

  it('a reload that drops an unhealthy upstream drops its igw_upstream_healthy series (no page for an upstream no longer routed to)', async () => {
    // A port nothing listens on, below the ephemeral range so no other test's listener takes it.
    const deadPort = 1
    const doc = (withDead: boolean) => ({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0', readiness: { upstreams: 'all' as const } },
      workers: 1,
      mode: 'ingress' as const,
      upstreams: {
        live: { url: backend.url, healthCheck: { intervalMs: 200 } },
        ...(withDead ? { gone: { url: `http://127.0.0.1:${deadPort}`, healthCheck: { intervalMs: 200, timeoutMs: 200 } } } : {}),
      },
      routes: [{ name: 'a', match: { pathPrefix: '/a' }, upstream: 'live', type: 'http' as const }, ...(withDead ? [{ name: 'b', match: { pathPrefix: '/b' }, upstream: 'gone', type: 'http' as const }] : [])],
    })
    const proxy = await startTestProxy(doc(true))
    try {
      await waitUntil(async () => (await proxy.metricsText()).includes('igw_upstream_healthy{upstream="gone"} 0') && (await proxy.metricsText()).includes('igw_upstream_healthy{upstream="live"} 1'), 10_000, 'both probes')
      expect((await get(`${proxy.adminUrl}/readyz`)).status).toBe(503)
      const r = await proxy.applyConfig(validateConfig(doc(false)))
      expect(r.ok).toBe(true)
      await waitUntil(async () => (await get(`${proxy.adminUrl}/readyz`)).status === 200, 10_000, 'ready after the reload')
      // Give a stale series every chance to show: several probe intervals.
      await new Promise((resolve) => setTimeout(resolve, 600))
      const m = await proxy.metricsText()
      expect(m).toContain('igw_upstream_healthy{upstream="live"} 1') // kept across the reload
      expect(m).not.toContain('upstream="gone"')
    } finally {
      await proxy.close()
    }
  })

  it('usage a worker drains after the 2 s collection deadline is reported by the next collection, not lost', async () => {
    const proxy = await startTestProxy({
      mode: 'ingress',
      workers: 1,
      workerWatchdog: { killAfterMs: 0 },
      tenants: { acme: {} },
      dlp: { rulePack: stallingPack(60), policy: { allowedPresets: ['mask_basic'] } },
      routes: [{ name: 'raw', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/raw/' }] } }] }],
    })
    const client = new Client(proxy.url, { keepAliveTimeout: 60_000, headersTimeout: 120_000, bodyTimeout: 120_000 })
    const headers = { 'x-tenant-id': 'acme' }
    try {
      for (let i = 0; i < 3; i++) expect((await get(`${proxy.url}/raw/fine`, { dispatcher: client, headers })).status).toBe(200)
      // A record that keeps the only thread busy for seconds (2^25 backtracking steps: ~5 s on CI's
      // machine, well past the 2 s deadline; every step more doubles it), then passes.
      const slow = client.request({ path: '/raw/evil?n=25', method: 'GET', headers }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }))
      // Awaited below; if an expectation fails first, the client's destroy rejects it: not an unhandled rejection.
      slow.catch(() => undefined)
      // Collect until one collection waits out its deadline: the thread is busy, and whatever it
      // holds (the requests not collected yet, the slow one once it ends) is drained late.
      let requests = 0
      let timedOut = false
      for (let i = 0; i < 20 && !timedOut; i++) {
        const t0 = Date.now()
        requests += (await proxy.collectUsage()).acme?.requests ?? 0
        timedOut = Date.now() - t0 >= 1_900
      }
      expect(timedOut).toBe(true)
      expect((await slow).status).toBe(200)
      await expect
        .poll(
          async () => {
            requests += (await proxy.collectUsage()).acme?.requests ?? 0
            return requests
          },
          { timeout: 60_000, interval: 200 },
        )
        .toBe(4) // the three before the stall and the slow one, each exactly once
    } finally {
      await client.destroy().catch(() => undefined)
      await proxy.close()
    }
  }, 120_000)

  it("a request that ends during the drain is in the usage collected after close() (the thread's last counts are kept)", async () => {
    const proxy = await startTestProxy({
      mode: 'ingress',
      workers: 1,
      tenants: { acme: {} },
      shutdown: { drainTimeoutMs: 5_000 },
      routes: [{ name: 'raw', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }] }],
    })
    let closed = false
    try {
      expect((await get(`${proxy.url}/x`, { headers: { 'x-tenant-id': 'acme' } })).status).toBe(200)
      expect((await proxy.collectUsage()).acme?.requests).toBe(1)
      const inFlight = get(`${proxy.url}/slow`, { headers: { 'x-tenant-id': 'acme' } })
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_worker_requests_total') === 2, 10_000, 'the slow request accepted')
      await proxy.close()
      closed = true
      expect(await inFlight).toEqual({ status: 200, body: 'slow done' })
      const last = await proxy.collectUsage()
      expect(last.acme?.requests).toBe(1)
    } finally {
      if (!closed) await proxy.close()
    }
  })
})
