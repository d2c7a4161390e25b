// The rendered containers start: each igw container of the overlays runs here with exactly its
// rendered args, environment and mounted ConfigMaps (as its uid, writable only where a volume
// is), against real backends, and answers its own probes. Only the addresses change (loopback,
// free ports, the test's backend and Redis), through the same IGW_* variables an overlay sets.
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { ROOT } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { runContainer, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

type Probe = { httpGet?: { path: string; port: string | number } }
type Container = RunContainer & { ports?: { name?: string; containerPort: number }[]; readinessProbe?: Probe; livenessProbe?: Probe }
type Workload = KubeObject & { spec: { template: { spec: RunPod & { containers: Container[] } } } }

const overlay = (name: string) => renderKustomize(join(ROOT, 'deploy/k8s/overlays', name))
const workload = (objs: KubeObject[], name: string) => objs.find((o) => o.kind === 'Deployment' && o.metadata.name === name) as Workload
const LOOPBACK = { IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0' }
const LISTENING = /"listen":"[^"]*:(\d+)","admin":"[^"]*:(\d+)".*"msg":"igw proxy listening"/

async function get(url: string): Promise<{ status: number; body: string }> {
  const r = await request(url)
  return { status: r.statusCode, body: await r.body.text() }
}

async function eventually(fn: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms
  while (!(await fn())) {
    if (Date.now() > until) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('rendered containers run', () => {
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

  it('ingress: the igw container starts with its ConfigMaps, shares Redis, is ready when the upstream is, enforces JWT tenants, drains on SIGTERM', async () => {
    const objs = overlay('ingress')
    const d = workload(objs, 'igw')
    const c = d.spec.template.spec.containers[0]!
    const run = await runContainer(objs, d.spec.template.spec, c, { ...LOOPBACK, GRAPH_UPSTREAM_URL: backend.url, IGW_REDIS: redis.url })
    try {
      const [, port, admin] = await run.waitFor(LISTENING)
      const probe = c.readinessProbe!.httpGet!
      expect(probe.path).toBe('/readyz')
      await eventually(async () => (await get(`http://127.0.0.1:${admin}${probe.path}`)).status === 200)
      expect((await get(`http://127.0.0.1:${admin}${c.livenessProbe!.httpGet!.path}`)).status).toBe(200)
      // The route needs a verified JWT (keys from the mounted igw-jwks ConfigMap): no token, 401.
      const r = await request(`http://127.0.0.1:${port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
      expect(r.statusCode).toBe(401)
      expect(((await r.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('UNAUTHENTICATED')
      // The config in force is the rendered document with the values layer applied.
      const cfg = JSON.parse((await get(`http://127.0.0.1:${admin}/config`)).body) as { config: { mode: string; redis?: { url: string }; routes: { filters: { name: string; ttlSeconds?: number }[] }[] } }
      expect(cfg.config.mode).toBe('ingress')
      expect(cfg.config.redis?.url).toBe(redis.url)
      expect(cfg.config.routes[0]!.filters.find((f) => f.name === 'cache')?.ttlSeconds).toBe(30)
    } finally {
      const code = await run.stop()
      expect(code, run.output()).toBe(0)
    }
    expect(run.output()).toMatch(/"msg":"draining"/)
  })

  it('sidecar: igw next to the app answers GraphQL through the pod loopback, as the pod user', async () => {
    const objs = overlay('sidecar-example')
    const d = workload(objs, 'orders-api')
    const c = d.spec.template.spec.containers.find((x) => x.name === 'igw')!
    const run = await runContainer(objs, d.spec.template.spec, c, { ...LOOPBACK, APP_PORT: String(backend.port) })
    try {
      const [, port, admin] = await run.waitFor(LISTENING)
      await eventually(async () => (await get(`http://127.0.0.1:${admin}/readyz`)).status === 200)
      const r = await request(`http://127.0.0.1:${port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ hello(name: \\"k8s\\") }"}' })
      expect(r.statusCode).toBe(200)
      expect(await r.body.json()).toEqual({ data: { hello: 'Hello, k8s!' } })
      if (process.getuid?.() === 0) expect(/^Uid:\s+(\d+)/m.exec((await import('node:fs')).readFileSync(`/proc/${run.child.pid}/status`, 'utf8'))?.[1]).toBe('10001')
    } finally {
      expect(await run.stop()).toBe(0)
    }
  })

  it('control plane: starts from its rendered args (SQLite on its volume, admin JWKS from its ConfigMap) and answers its probe', async () => {
    const objs = overlay('ingress')
    const d = workload(objs, 'igw-control-plane')
    const c = d.spec.template.spec.containers[0]!
    const { createServer } = await import('node:net')
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port
        s.close(() => resolve(p))
      })
    })
    const metricsPort = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port
        s.close(() => resolve(p))
      })
    })
    const args = c.args!.map((a) => (a === ':7070' ? `127.0.0.1:${port}` : a))
    // The metrics address the manifest sets (:9902, in env) moves to a free loopback port.
    expect(c.env?.find((e) => e.name === 'IGW_METRICS_LISTEN')?.value).toBe(`:${c.ports!.find((p) => p.name === 'metrics')!.containerPort}`)
    const run = await runContainer(objs, d.spec.template.spec, { ...c, args }, { IGW_METRICS_LISTEN: `127.0.0.1:${metricsPort}` })
    try {
      const probe = c.readinessProbe!.httpGet!
      await eventually(async () => {
        try {
          return (await get(`http://127.0.0.1:${port}${probe.path}`)).status === 200
        } catch {
          if (run.child.exitCode !== null) throw new Error(`control plane exited:\n${run.output()}`)
          return false
        }
      }, 15_000)
      const health = JSON.parse((await get(`http://127.0.0.1:${port}/healthz`)).body) as { status: string }
      expect(health.status).toBe('ok')
      // Its state went to the volume, and the signing key beside the database (proxies pin it).
      const { existsSync } = await import('node:fs')
      expect(existsSync(run.local('/var/lib/igw-control-plane/igw.db'))).toBe(true)
      expect(existsSync(run.local('/var/lib/igw-control-plane/signing-key.pem'))).toBe(true)
      // Prometheus scrapes the port its annotation names; the mounted plugin trust file was read
      // (an unreadable one would have stopped the start) and the refusal reasons exist at 0.
      const annotations = (d.spec.template as { metadata?: { annotations?: Record<string, string> } }).metadata?.annotations ?? {}
      expect(annotations['prometheus.io/port']).toBe('9902')
      const metrics = await get(`http://127.0.0.1:${metricsPort}${annotations['prometheus.io/path']}`)
      expect(metrics.status).toBe(200)
      expect(metrics.body).toMatch(/^igw_plugin_upload_rejections_total\{reason="unsigned"\} 0$/m)
      expect(metrics.body).toMatch(/^igw_control_plane_config_head_version 0$/m)
    } finally {
      await run.stop()
    }
  })
})
