// The worker watchdog while a thread builds its config. A thread stuck there (here: reading its
// DLP rule pack from a path that is a FIFO with no writer, as a read from a hung network mount
// never returns) was never pinged before it listened: a restarted thread left its slot empty for
// good (/readyz 503 without a reason) and a first start hung. And a listening thread the watchdog
// stopped was still counted in igw_workers until it had exited, which a thread blocked in a
// system call does only once the call returns. Real supervisor, worker threads and FIFOs.
import { execFileSync } from 'node:child_process'
import { closeSync, constants, copyFileSync, linkSync, mkdtempSync, openSync, renameSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { BUILTIN_RULE_PACK } from '../../filters/dlp/rule-pack.ts'
import { startProxy } from '../../proxy/supervisor.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, metricSum, startTestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

/** A FIFO at `path`, and a second name for it: the test's way in once `path` holds a file again. */
function fifoAt(path: string): { release: () => void } {
  const side = `${path}.writer`
  execFileSync('mkfifo', [side])
  linkSync(side, path)
  return {
    // A reader blocked in open() returns (and reads EOF at once); ENXIO: nobody is blocked on it.
    release: () => {
      try {
        closeSync(openSync(side, constants.O_WRONLY | constants.O_NONBLOCK))
      } catch {}
    },
  }
}

describe('worker watchdog during the config build', () => {
  let backend: RawBackend
  let dir: string
  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => res.end('fine'))
  })
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'igw-wd24h-'))
  })
  afterAll(async () => {
    await backend?.close()
  })

  const doc = (rulePack: string): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
    workers: 1,
    // A healthy thread answers every ping: its config build holds its event loop ~10 ms, but a
    // loaded machine starves threads of CPU for hundreds of ms, and at 500 ms a healthy thread
    // could be taken for stalled (one more stall and restart than the exact counts below). Each
    // stall this test provokes costs killAfterMs: 2 s buys 4× the margin for ~4.5 s of test time.
    workerWatchdog: { killAfterMs: 2_000 },
    dlp: { rulePack, policy: { allowedPresets: ['mask_basic'] } },
    routes: [{ name: 'raw', upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/raw/' }] } }] }],
  })

  // Most waits below include a thread's start: loading its modules took 7 s on a loaded 2-core
  // machine (~1 s quiet; the deadlines were 8 s), so they are 30 s, which a passing run never
  // waits out.
  const START_MS = 30_000

  it('a restarted thread stuck while starting is stopped, counted, explained by /readyz and restarted; igw_workers drops as a listening one is stopped', async () => {
    const pack = join(dir, 'pack.json')
    copyFileSync(BUILTIN_RULE_PACK, pack)
    const proxy = await startTestProxy(doc(pack))
    const fifo = fifoAt(join(dir, 'fifo'))
    const reloadFifo = fifoAt(join(dir, 'reload-fifo'))
    const replace = (path: string) => {
      copyFileSync(BUILTIN_RULE_PACK, join(dir, 'pack.tmp'))
      renameSync(join(dir, 'pack.tmp'), path)
    }
    try {
      renameSync(join(dir, 'fifo'), pack) // the replacement reads the pack again: a FIFO now
      await proxy.threads()[0]!.terminate() // a crash
      await waitUntil(() => proxy.logs.find('worker thread stalled while starting; terminating the thread').length === 1, START_MS, 'the stalled start stopped')
      const ready = await request(`${proxy.adminUrl}/readyz`)
      expect(ready.statusCode).toBe(503)
      expect(((await ready.body.json()) as { workers: unknown }).workers).toMatchObject({ listening: 0, wanted: 1, notListening: [{ worker: 0, state: 'stalled' }] })
      expect(metricSum(await proxy.metricsText(), 'igw_worker_stalls_total')).toBe(1)
      replace(pack)
      fifo.release() // the blocked read returns: the terminated thread can exit
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_workers') === 1, START_MS, 'a third thread listening')
      let m = await proxy.metricsText()
      expect(metricSum(m, 'igw_worker_restarts_total')).toBe(2)
      expect(metricSum(m, 'igw_worker_stalls_total')).toBe(1)
      const res = await request(`${proxy.url}/x`)
      expect(res.statusCode).toBe(200)
      expect(await res.body.text()).toBe('fine')

      // A listening thread stuck in a reload's build: it serves nobody once stopped, exited or not.
      const fifoPath = join(dir, 'reload-fifo')
      const applied = proxy.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, ...doc(fifoPath) }))
      await waitUntil(() => proxy.logs.find('worker event loop stalled; terminating the thread').length === 1, START_MS, 'the stalled thread stopped')
      m = await proxy.metricsText()
      expect(metricSum(m, 'igw_worker_stalls_total')).toBe(2)
      expect(metricSum(m, 'igw_workers')).toBe(0)
      expect(proxy.threads()[0]).toBeDefined() // not exited yet
      replace(fifoPath)
      reloadFifo.release()
      await applied
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_workers') === 1, START_MS, 'the replacement listening')
    } finally {
      fifo.release()
      reloadFifo.release()
      await proxy.close()
    }
  }, 5 * START_MS)

  it('a first start stuck in the config build fails with the reason instead of hanging', async () => {
    const fifoPath = join(dir, 'start-fifo')
    const fifo = fifoAt(fifoPath)
    const logs = new LogCapture()
    const started = startProxy({ config: validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, ...doc(fifoPath) }), logDestination: logs as never })
    const outcome = started.then(
      async (p) => {
        await p.close()
        return 'started'
      },
      (err: Error) => err,
    )
    try {
      await waitUntil(() => logs.find('worker thread stalled while starting; terminating the thread').length === 1, START_MS, 'the stalled first start stopped')
      fifo.release()
      const err = await outcome
      expect(err).toBeInstanceOf(Error)
      expect((err as Error).message).toMatch(/worker 0 exited with code 1 before listening: terminated by the watchdog \d+ ms after its start/)
    } finally {
      fifo.release()
      await outcome
    }
  }, 2 * START_MS)
})
