// Worker heaps and the container's memory limit: each worker thread sized its V8 heap from the
// machine's memory, so the supervisor's and N workers' limits together exceeded the container
// limit and a growing worker got the pod OOM-killed (no drain) instead of failing alone. The
// default old generation now comes from the cgroup limit (IGW_CGROUP_MEMORY_MAX_FILE stands in
// for /sys/fs/cgroup/memory.max here), and each worker's heap is on /metrics.
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const MiB = 1024 * 1024

function cgroupFile(content: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'igw-cgroup-')), 'memory.max')
  writeFileSync(file, content)
  return file
}

describe('worker heap limits follow the container memory limit', () => {
  let backend: RawBackend | undefined
  let proxy: TestProxy | undefined
  const savedEnv = process.env.IGW_CGROUP_MEMORY_MAX_FILE
  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
    await backend?.close()
    backend = undefined
    if (savedEnv === undefined) delete process.env.IGW_CGROUP_MEMORY_MAX_FILE
    else process.env.IGW_CGROUP_MEMORY_MAX_FILE = savedEnv
  })

  async function start(memoryMax: string, workerHeap: Record<string, unknown> = {}): Promise<TestProxy> {
    process.env.IGW_CGROUP_MEMORY_MAX_FILE = cgroupFile(memoryMax)
    backend = await startRawBackend((_req, res) => res.end('{}'))
    proxy = await startTestProxy({ workers: 2, workerHeap, routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [] }] })
    return proxy
  }

  async function heapLimits(p: TestProxy): Promise<number[]> {
    const out: number[] = []
    for (const w of p.threads()) out.push(w === undefined ? 0 : (await w.getHeapStatistics()).heap_size_limit)
    return out
  }

  it('a 512 MiB limit with 2 workers gives each worker a share (3/4 of it over main + 2), not the machine-sized default', async () => {
    const p = await start('536870912\n')
    // floor(512 × 0.75 / 3) = 128 MiB per thread, young generation (24 MiB) included.
    for (const limit of await heapLimits(p)) {
      expect(limit).toBeGreaterThanOrEqual(120 * MiB)
      expect(limit).toBeLessThanOrEqual(140 * MiB)
    }
    // The two workers' heap limits plus a share for the supervisor stay inside the container.
    const text = await p.metricsText()
    const total = metricSum(text, 'igw_worker_heap_size_limit_bytes')
    expect(total).toBeGreaterThanOrEqual(2 * 120 * MiB)
    expect(total).toBeLessThanOrEqual(2 * 140 * MiB)
    expect(metricSum(text, 'igw_worker_heap_size_limit_bytes', 'worker="0"')).toBeGreaterThan(0)
    expect(metricSum(text, 'igw_worker_heap_size_limit_bytes', 'worker="1"')).toBeGreaterThan(0)
    expect(metricSum(text, 'igw_worker_heap_used_bytes', 'worker="0"')).toBeGreaterThan(0)
    const line = p.logs.find('igw proxy listening')[0]
    expect(line).toMatchObject({ memoryLimitMb: 512, workerOldGenerationMb: 104 })
  })

  it('workerHeap.maxOldGenerationMb still wins over the derived share', async () => {
    const p = await start('536870912', { maxOldGenerationMb: 200 })
    for (const limit of await heapLimits(p)) {
      // V8's heap limit is the old generation plus the young one (24 MiB by default).
      expect(limit).toBeGreaterThanOrEqual(200 * MiB)
      expect(limit).toBeLessThanOrEqual(232 * MiB)
    }
  })

  it('no limit ("max") keeps V8 default sizing', async () => {
    const p = await start('max\n')
    const line = p.logs.find('igw proxy listening')[0]
    expect(line).toMatchObject({ memoryLimitMb: null, workerOldGenerationMb: null })
    // No cap was passed: each worker got V8's own default (whatever this machine makes of it).
    for (const w of p.threads()) expect(w?.resourceLimits?.maxOldGenerationSizeMb).not.toBe(104)
  })

  it('/metrics shows each worker heap, and a restarted worker is counted once', async () => {
    const p = await start('1073741824')
    const before = await p.metricsText()
    expect(before).toMatch(/^igw_worker_heap_size_limit_bytes\{worker="0"\} \d+/m)
    void p.threads()[0]!.terminate()
    await expect.poll(async () => (await request(`${p.adminUrl}/healthz`).then((r) => r.body.json())) as { workers: number }, { timeout: 20_000, interval: 100 }).toMatchObject({ workers: 2 })
    // Polled: a thread that has just started listening may miss one scrape's heap read.
    await expect.poll(async () => (await p.metricsText()).match(/^igw_worker_heap_size_limit_bytes\{/gm)?.length, { timeout: 10_000, interval: 200 }).toBe(2)
  })

  it('reads cgroup v2 and v1 formats; a limit above the machine is none', async () => {
    const { containerMemoryLimit, defaultWorkerOldGenerationMb } = await import('../../proxy/supervisor.ts')
    expect(containerMemoryLimit({ IGW_CGROUP_MEMORY_MAX_FILE: cgroupFile('268435456\n') })).toBe(268435456)
    expect(containerMemoryLimit({ IGW_CGROUP_MEMORY_MAX_FILE: cgroupFile('max\n') })).toBeUndefined()
    expect(containerMemoryLimit({ IGW_CGROUP_MEMORY_MAX_FILE: cgroupFile('9223372036854771712\n') })).toBeUndefined() // v1 "unlimited"
    expect(containerMemoryLimit({ IGW_CGROUP_MEMORY_MAX_FILE: '/nonexistent/memory.max' })).toBeUndefined()
    expect(defaultWorkerOldGenerationMb(undefined, 2, 6)).toBeUndefined()
    expect(defaultWorkerOldGenerationMb(1024 * MiB, 2, 6)).toBe(250) // the ingress manifest: 1Gi, 2 workers
    expect(defaultWorkerOldGenerationMb(256 * MiB, 1, 6)).toBe(90) // the sidecar manifest: 256Mi, 1 worker
    expect(defaultWorkerOldGenerationMb(64 * MiB, 8, 6)).toBe(64) // never below a heap a worker can run in (the start warns)
    expect(defaultWorkerOldGenerationMb(1024 * MiB, 2, 24)).toBe(232) // the default young generation
    expect(defaultWorkerOldGenerationMb(1024 * MiB, 2, 16)).toBe(232) // 16 reserves 24 (see below)
    expect(defaultWorkerOldGenerationMb(256 * MiB, 1, 24)).toBe(72)
  })

  it('subtracts the young generation V8 really reserves, not the nominal one', async () => {
    const { effectiveYoungGenerationMb } = await import('../../proxy/supervisor.ts')
    const { Worker } = await import('node:worker_threads')
    for (const young of [6, 8, 16, 24, 32]) {
      const w = new Worker('require("node:worker_threads").parentPort.postMessage(require("node:v8").getHeapStatistics().heap_size_limit)', { eval: true, resourceLimits: { maxOldGenerationSizeMb: 100, maxYoungGenerationSizeMb: young } })
      const [limit] = (await once(w, 'message')) as [number]
      await w.terminate()
      expect({ young, reserved: limit / MiB - 100 }).toEqual({ young, reserved: effectiveYoungGenerationMb(young) })
    }
  })
})
