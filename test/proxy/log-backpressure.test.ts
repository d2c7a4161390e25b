// stdout that stops being read (an unread pipe, a stuck log shipper): the supervisor's
// asynchronous stdout buffered every thread's lines without bound until the process was
// OOM-killed. Past log.maxBufferedBytes lines are dropped and counted, traffic is served, and
// logging resumes once the reader does.
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, spawnIgw, writeTempConfig, type SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('log output to a stdout that is not read', () => {
  let backend: RawBackend
  let igw: SpawnedIgw

  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => res.end('{"data":{"ok":true}}'))
    const cfg = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      log: { level: 'info', access: { enabled: true }, maxBufferedBytes: '64kib' },
      routes: [{ name: 'api', upstream: backend.url, type: 'http' }],
    })
    igw = await spawnIgw(['proxy', '--config', cfg])
  })
  afterAll(async () => {
    igw?.child.stdout?.resume()
    await igw?.stop()
    await backend?.close()
  })

  it('drops what is over the bound, counts it, keeps serving, and logs again once stdout is read', { timeout: 90_000 }, async () => {
    igw.child.stdout!.pause()
    const pool = new Pool(igw.url, { connections: 16 })
    try {
      // 3000 access lines (~600 KB) against a 64 KiB pipe and a 64 KiB buffer.
      const statuses: number[] = []
      const one = async (i: number) => {
        const r = await pool.request({ path: `/item/${i}`, method: 'GET' })
        await r.body.dump()
        statuses.push(r.statusCode)
      }
      for (let i = 0; i < 3000; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => one(i + k)))
      expect(statuses.length).toBe(3000)
      expect(statuses.every((s) => s === 200)).toBe(true)
      const dropped = async () => metricSum(await (await fetch(`${igw.adminUrl}/metrics`)).text(), 'igw_log_dropped_bytes_total')
      await waitUntil(async () => (await dropped()) > 0, 5_000, 'dropped bytes counted')
      // Bounded: most of it was dropped, not held (pipe + buffer hold ~128 KiB).
      expect(await dropped()).toBeGreaterThan(256 * 1024)
      expect(igw.output.some((l) => l.includes('stdout is not keeping up'))).toBe(true)

      igw.child.stdout!.resume()
      // The held backlog (pipe + buffer) goes out first: a line that reaches the buffer while it is
      // still full is dropped and counted, as the bound says. A single request sent right after the
      // resume lost its line that way on a loaded box (the drop counter grew by its ~255 bytes, the
      // backlog drained, the line never came). So requests go out one a second until one's access
      // line shows: the buffer had room for it and wrote it out.
      const logged = (path: string) => igw.output.some((l) => l.includes(path))
      const probes: string[] = []
      // (20 s: the backlog drains through a pipe the test process reads while two other test workers load the CPU; seen above 5 s on a busy CI box)
      const t0 = Date.now()
      while (!probes.some(logged)) {
        if (Date.now() - t0 > 20_000) throw new Error(`no access line of ${probes.length} requests after the reader came back within 20 s`)
        const path = `/probe-${probes.length}-${Date.now()}`
        probes.push(path)
        const r = await pool.request({ path, method: 'GET' })
        await r.body.dump()
        await waitUntil(() => logged(path), 1_000).catch(() => undefined)
      }
      // Caught up: the next line is written, and nothing is dropped any more.
      const droppedBefore = await dropped()
      const marker = `/after-${Date.now()}`
      const r = await pool.request({ path: marker, method: 'GET' })
      await r.body.dump()
      await waitUntil(() => logged(marker), 15_000, 'the access line of a request after the backlog drained')
      expect(await dropped()).toBe(droppedBefore)
    } finally {
      await pool.close()
    }
  })

  it('refuses a size that is not one, naming the path', async () => {
    const { validateConfig } = await import('../../config/load.ts')
    expect(() => validateConfig({ routes: [{ name: 'a', upstream: 'http://127.0.0.1:1', type: 'http' }], log: { maxBufferedBytes: 'lots' } })).toThrow(/log\.maxBufferedBytes: expected a byte size/)
  })
})
