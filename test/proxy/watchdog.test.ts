// The worker watchdog against a real stall: an operator's DLP rule pack with a catastrophically
// backtracking pattern wedges the worker thread scanning one export record. The supervisor must
// notice the silent event loop, terminate the thread and bring a new one up that serves again.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { BUILTIN_RULE_PACK } from '../../filters/dlp/rule-pack.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('worker watchdog', () => {
  let backend: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      // (?:a|a){1,60}!b against 60 a's, a "!" and no "b" after it: 2^60 ways to fail. (The rule
      // pack check refuses the classic shapes, (?:a+)+ and \w+ runs, at load; overlapping
      // alternatives get past any cheap check, which is why the watchdog exists.)
      res.end(req.url === '/raw/evil.ndjson' ? `{"note":"${'a'.repeat(60)}!c b"}\n` : '{"note":"fine"}\n')
    })
    const pack = JSON.parse(readFileSync(BUILTIN_RULE_PACK, 'utf8')) as { rules: unknown[] }
    pack.rules.push({ id: 'runaway.value', version: '1.0.0', type: 'email', pattern: '(?:a|a){1,60}!b', validator: 'email' })
    const packPath = join(mkdtempSync(join(tmpdir(), 'igw-watchdog-')), 'pack.json')
    writeFileSync(packPath, JSON.stringify(pack))
    proxy = await startTestProxy({
      workers: 1,
      workerWatchdog: { killAfterMs: 1_000 },
      dlp: { rulePack: packPath, policy: { allowedPresets: ['mask_basic'] } },
      routes: [{ name: 'raw', upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/raw/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('terminates a worker whose event loop stopped turning and restarts it; the proxy serves again', async () => {
    const before = await request(`${proxy.url}/raw/fine.ndjson`)
    expect(before.statusCode).toBe(200)
    expect(await before.body.text()).toBe('{"note":"fine"}\n')
    const t0 = Date.now()
    // The stuck request itself is lost with its thread: the client sees the connection end.
    const stuck = await request(`${proxy.url}/raw/evil.ndjson`, { headersTimeout: 20_000, bodyTimeout: 20_000 }).then(
      async (r) => `status ${r.statusCode}: ${await r.body.text().catch((e: Error) => e.message)}`,
      (e: Error) => `error: ${e.message}`,
    )
    expect(stuck).not.toMatch(/status 200: \{"note"/) // it never completed normally
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_workers') === 1 && metricSum(await proxy.metricsText(), 'igw_worker_restarts_total') === 1, 10_000, 'a restarted worker')
    const took = Date.now() - t0
    expect(took).toBeGreaterThanOrEqual(900) // not before killAfterMs
    const m = await proxy.metricsText()
    expect(metricSum(m, 'igw_worker_stalls_total')).toBe(1)
    const line = proxy.logs.find('worker event loop stalled; terminating the thread')
    expect(line).toHaveLength(1)
    expect(line[0]).toMatchObject({ worker: 0 })
    expect(line[0]!.stalledMs as number).toBeGreaterThanOrEqual(1_000)
    const after = await request(`${proxy.url}/raw/fine.ndjson`)
    expect(after.statusCode).toBe(200)
    expect(await after.body.text()).toBe('{"note":"fine"}\n')
    // a healthy worker is left alone: no second stall while it idles past killAfterMs
    await new Promise((r) => setTimeout(r, 1_500))
    expect(metricSum(await proxy.metricsText(), 'igw_worker_stalls_total')).toBe(1)
  })
})
