// A worker thread restarted while a reload was applied boots with the config of its spawn and is
// sent the current version once it listens. When it could not build that version (a file it
// names gone meanwhile) it kept serving the old one while the supervisor recorded it as running
// the current one: /readyz said nothing, no failure was counted, and nothing tried again; then
// igw_config_last_reload_successful stayed 1 meanwhile, so IgwConfigReloadRejected did not fire.
// Real supervisor, two worker threads, a FIFO holding the restarted thread in its build.
import { execFileSync } from 'node:child_process'
import { closeSync, constants, copyFileSync, linkSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { BUILTIN_RULE_PACK } from '../../filters/dlp/rule-pack.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, testProxyConfig } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

interface Readyz {
  version: number
  workers: { listening: number; staleConfig?: { worker: number; version: number; error: string }[] }
}

describe('a restarted worker thread that cannot build the current config version', () => {
  let backend: RawBackend
  let dir: string
  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => res.end('fine'))
    dir = mkdtempSync(join(tmpdir(), 'igw-resync30z-'))
  })
  afterAll(async () => {
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const doc = (rulePack: string, route: string): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
    workers: 2,
    workerWatchdog: { killAfterMs: 0 }, // the held build is the test's doing, not a stall
    dlp: { rulePack, policy: { allowedPresets: ['mask_basic'] } },
    routes: [{ name: route, match: { pathPrefix: `/${route}` }, upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/export/' }] } }] }],
  })

  it('is reported by /readyz with the version it runs, counted as a reload failure, alerted on, and retried until it builds', async () => {
    const packV1 = join(dir, 'pack-v1.json')
    const packV2 = join(dir, 'pack-v2.json')
    copyFileSync(BUILTIN_RULE_PACK, packV1)
    copyFileSync(BUILTIN_RULE_PACK, packV2)
    const proxy = await startTestProxy(doc(packV1, 'v1'))
    // The pack v1 names becomes a FIFO: the thread restarted below blocks reading it until fed.
    const side = join(dir, 'fifo')
    execFileSync('mkfifo', [side])
    linkSync(side, join(dir, 'fifo-link'))
    const unblock = () => {
      try {
        closeSync(openSync(side, constants.O_WRONLY | constants.O_NONBLOCK))
      } catch {}
    }
    const readyz = async (): Promise<Readyz> => (await request(`${proxy.adminUrl}/readyz`)).body.json() as Promise<Readyz>
    try {
      renameSync(join(dir, 'fifo-link'), packV1)
      const crashed = proxy.threads()[0]!
      await crashed.terminate() // a crash; its replacement boots with version 1
      await waitUntil(() => proxy.threads()[0] !== undefined && proxy.threads()[0] !== crashed, 5_000, 'worker 0 respawned')

      // Version 2 is applied by worker 1 (the restarting one is not asked) while its file is there.
      const applied = await proxy.applyConfig(testProxyConfig(doc(packV2, 'v2')))
      expect(applied).toEqual({ ok: true, version: 2 })
      rmSync(packV2) // gone before the restarted thread is sent version 2
      await writeFile(side, readFileSync(BUILTIN_RULE_PACK)) // its version 1 build goes on

      await waitUntil(() => proxy.logs.find('config version rejected by worker; keeping the previous one').length === 1, 10_000, 'worker 0 refused version 2')
      await expect.poll(async () => (await readyz()).workers.staleConfig, { timeout: 5_000, interval: 50 }).toEqual([{ worker: 0, version: 1, error: expect.stringContaining('pack-v2.json') }])
      const r = await readyz()
      expect(r.version).toBe(2)
      expect(r.workers.listening).toBe(2)
      // (At least: on a slow host the first retry, 2 s on, may have failed too.)
      const stale = await proxy.metricsText()
      expect(metricSum(stale, 'igw_config_reload_failures_total')).toBeGreaterThanOrEqual(1)
      // What IgwConfigReloadRejected alerts on: a thread serves an older config than it was given.
      expect(stale).toMatch(/^igw_config_last_reload_successful 0$/m)
      expect(proxy.logs.find('worker thread could not build the running config version; it serves the one it has until a retry builds it')[0]).toMatchObject({ worker: 0, version: 2, runs: 1, retryInMs: 2_000 })

      copyFileSync(BUILTIN_RULE_PACK, packV2) // the file is back: the retry (after 2 s) builds it
      await expect.poll(async () => (await readyz()).workers.staleConfig, { timeout: 10_000, interval: 100 }).toBeUndefined()
      expect(await proxy.metricsText()).toMatch(/^igw_config_last_reload_successful 1$/m)
      const res = await request(`${proxy.url}/v2/x`)
      expect(res.statusCode).toBe(200)
      expect(await res.body.text()).toBe('fine')
    } finally {
      unblock()
      await proxy.close()
    }
  }, 20_000)
})
