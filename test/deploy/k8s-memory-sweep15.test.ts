// The rendered igw containers under their own memory limit: each runs with exactly its rendered
// args, environment and ConfigMaps, and with IGW_CGROUP_MEMORY_MAX_FILE holding its
// resources.limits.memory (what /sys/fs/cgroup/memory.max holds in the pod). The worker threads'
// heap limits (on /metrics) must fit the container with the supervisor's share; before, each
// worker sized its heap from the machine (gigabytes), and a growing worker got the pod
// OOM-killed with no drain. And the ingress stays ready while its upstream is down.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, ROOT } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'
import { podRoot, runContainer, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

type Container = RunContainer & { resources?: { limits?: { memory?: string } } }
type Workload = KubeObject & { spec: { template: { spec: RunPod & { containers: Container[] } } } }

const overlay = (name: string) => renderKustomize(join(ROOT, 'deploy/k8s/overlays', name))
const workload = (objs: KubeObject[], name: string) => objs.find((o) => o.kind === 'Deployment' && o.metadata.name === name) as Workload
const LOOPBACK = { IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0' }
const LISTENING = /"listen":"[^"]*:(\d+)","admin":"[^"]*:(\d+)","workers":(\d+).*"msg":"igw proxy listening"/

/** A Kubernetes memory quantity (binary or decimal suffix) in bytes. */
function bytes(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q)
  if (!m) throw new Error(`unexpected memory quantity ${q}`)
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] ?? ''] ?? 1
  return Number(m[1]) * unit
}

describe('rendered igw containers size their worker heaps from their memory limit', () => {
  let backend: DemoBackend
  let redis: TestRedis
  beforeAll(async () => {
    backend = await startDemoBackend()
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.close()
    await backend?.close()
  })

  const cases = [
    { overlay: 'ingress', deployment: 'igw', container: 'igw', env: (): Record<string, string> => ({ GRAPH_UPSTREAM_URL: backend.url, IGW_REDIS: redis.url }) },
    { overlay: 'sidecar-example', deployment: 'orders-api', container: 'igw', env: (): Record<string, string> => ({ APP_PORT: String(backend.port) }) },
  ]
  for (const k of cases) {
    it(`${k.overlay}: the workers' heap limits and the supervisor's share fit in the container's limit`, async () => {
      const objs = overlay(k.overlay)
      const d = workload(objs, k.deployment)
      const c = d.spec.template.spec.containers.find((x) => x.name === k.container)!
      const limit = bytes(c.resources!.limits!.memory!)
      const root = podRoot()
      const cgroup = join(root, 'memory.max')
      writeFileSync(cgroup, `${limit}\n`, { mode: 0o644 })
      const run = await runContainer(objs, d.spec.template.spec, c, { ...LOOPBACK, ...k.env(), IGW_CGROUP_MEMORY_MAX_FILE: cgroup }, root)
      try {
        const [, , admin, workers] = await run.waitFor(LISTENING)
        const n = Number(workers)
        let text = ''
        await waitUntil(async () => {
          text = await (await request(`http://127.0.0.1:${admin}/metrics`)).body.text()
          return text.match(/^igw_worker_heap_size_limit_bytes\{/gm)?.length === n
        }, 15_000)
        const total = metricSum(text, 'igw_worker_heap_size_limit_bytes')
        // n workers plus one share for the supervisor thread within three quarters of the limit.
        expect((total * (n + 1)) / n).toBeLessThanOrEqual(limit * 0.75)
        expect(total / n).toBeGreaterThanOrEqual(64 * 2 ** 20) // and still a usable heap each
        // Each worker's cache entries live outside its heap (Buffers): with the heaps' share, a
        // full cache in every worker and the process's native memory (code, sockets, TLS, ~48 MiB
        // measured) must fit too. The sidecar's 64 MiB default cache in a 256Mi container did
        // not: a warm cache got the pod OOM-killed without a drain.
        const cfg = JSON.parse(await (await request(`http://127.0.0.1:${admin}/config`)).body.text()) as { config: { routes: { filters: { name: string; maxBytes?: number }[] }[] } }
        const cacheBytes = cfg.config.routes.flatMap((r) => r.filters).filter((f) => f.name === 'cache').reduce((sum, f) => sum + (f.maxBytes ?? 0), 0)
        expect(cacheBytes).toBeGreaterThan(0)
        expect((total * (n + 1)) / n + n * cacheBytes + 48 * 2 ** 20).toBeLessThanOrEqual(limit)
      } finally {
        await run.stop()
      }
    })
  }

  it('ingress: its pods stay ready while the upstream is down (one dead backend must not empty the Service)', async () => {
    const objs = overlay('ingress')
    const d = workload(objs, 'igw')
    const c = d.spec.template.spec.containers[0]!
    const dead = 'http://127.0.0.1:1' // below the ephemeral range: nothing else can listen there
    const run = await runContainer(objs, d.spec.template.spec, c, { ...LOOPBACK, GRAPH_UPSTREAM_URL: dead, IGW_REDIS: redis.url })
    try {
      const [, , admin] = await run.waitFor(LISTENING)
      let body: { ready: boolean; upstreams: { name: string; healthy: boolean; error?: string }[] } = { ready: false, upstreams: [] }
      let status = 0
      await waitUntil(async () => {
        const r = await request(`http://127.0.0.1:${admin}/readyz`)
        status = r.statusCode
        body = (await r.body.json()) as typeof body
        return body.upstreams.some((u) => u.name === 'graph' && u.error !== undefined)
      }, 20_000)
      expect(status).toBe(200)
      expect(body.ready).toBe(true)
      expect(body.upstreams.find((u) => u.name === 'graph')).toMatchObject({ healthy: false })
    } finally {
      await run.stop()
    }
  })
})
