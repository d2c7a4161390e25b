// The rendered containers start: each igw container of the overlays runs here with exactly its
// rendered args, environment and mounted ConfigMaps (as its uid, writable only where a volume
// is), against real backends, and answers its own probes. Only the addresses change (loopback,
// free ports, the test's backend and Redis), through the same IGW_* variables an overlay sets.
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { freePort } from '../helpers/ports.ts'
import { ROOT } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { podRoot, runContainer, volumeDir, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'
import { waitUntil } from '../helpers/wait.ts'

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

/** Start the rendered control plane container on free loopback ports; resolves once /healthz answers. */
async function startRenderedControlPlane(objs: KubeObject[], env: Record<string, string> = {}) {
  const d = workload(objs, 'igw-control-plane')
  const c = d.spec.template.spec.containers[0]!
  const port = await freePort()
  const metricsPort = await freePort()
  const args = c.args!.map((a) => (a === ':7070' ? `127.0.0.1:${port}` : a))
  const run = await runContainer(objs, d.spec.template.spec, { ...c, args }, { IGW_METRICS_LISTEN: `127.0.0.1:${metricsPort}`, ...env })
  try {
    await waitUntil(async () => {
      try {
        return (await get(`http://127.0.0.1:${port}${c.readinessProbe!.httpGet!.path}`)).status === 200
      } catch {
        if (run.child.exitCode !== null) throw new Error(`control plane exited:\n${run.output()}`)
        return false
      }
    }, 15_000)
  } catch (err) {
    await run.stop()
    throw err
  }
  return { d, c, run, port, metricsPort, url: `http://127.0.0.1:${port}` }
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
      await waitUntil(async () => (await get(`http://127.0.0.1:${admin}${probe.path}`)).status === 200)
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
      await waitUntil(async () => (await get(`http://127.0.0.1:${admin}/readyz`)).status === 200)
      // connection: close: no idle keep-alive for the stop below to wait its drain grace on.
      const r = await request(`http://127.0.0.1:${port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', connection: 'close' }, body: '{"query":"{ hello(name: \\"k8s\\") }"}' })
      expect(r.statusCode).toBe(200)
      expect(await r.body.json()).toEqual({ data: { hello: 'Hello, k8s!' } })
      if (process.getuid?.() === 0) expect(/^Uid:\s+(\d+)/m.exec((await import('node:fs')).readFileSync(`/proc/${run.child.pid}/status`, 'utf8'))?.[1]).toBe('10001')
    } finally {
      expect(await run.stop()).toBe(0)
    }
  })

  it('control plane: starts from its rendered args (SQLite on its volume, admin JWKS from its ConfigMap) and answers its probe', async () => {
    const objs = overlay('ingress')
    const { d, c, run, port, metricsPort } = await startRenderedControlPlane(objs)
    // The metrics address the manifest sets (:9902, in env) moved to a free loopback port.
    expect(c.env?.find((e) => e.name === 'IGW_METRICS_LISTEN')?.value).toBe(`:${c.ports!.find((p) => p.name === 'metrics')!.containerPort}`)
    try {
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
  it('ingress-connected: the control plane seeds itself from the proxies\' ConfigMap, the proxy boots from its pushed snapshot and follows a change', async () => {
    const objs = structuredClone(overlay('ingress-connected'))
    // The operator's keys: the control plane's auth JWKS gets the test's public key (the committed
    // one is an example whose private half nobody has); the proxy token is the Secret's value.
    const { exportJWK, generateKeyPair, SignJWT } = await import('jose')
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
    const authName = workload(objs, 'igw-control-plane').spec.template.spec.volumes!.find((v) => v.name === 'auth')!.configMap!.name // hash-suffixed
    const auth = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === authName) as KubeObject & { data: Record<string, string> }
    auth.data['jwks.json'] = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'test', alg: 'EdDSA', use: 'sig' }] })
    const token = (roles: string[]) => new SignJWT({ roles }).setProtectedHeader({ alg: 'EdDSA', kid: 'test' }).setSubject(`test-${roles[0]}`).setIssuedAt().setExpirationTime('10m').sign(privateKey)
    const d = workload(objs, 'igw')
    const c = d.spec.template.spec.containers[0]!
    // The document reaches the proxy over the network, so the files it names (the JWKS on the
    // proxy's igw-jwks volume) are not moved by the harness's path mapping as mounted files are:
    // point them at where that volume will be on this machine (kube-run has no mount namespace).
    const root = podRoot()
    const seedName = workload(objs, 'igw-control-plane').spec.template.spec.volumes!.find((v) => v.name === 'seed')!.configMap!.name
    const seed = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === seedName) as KubeObject & { data: Record<string, string> }
    const jwksMount = c.volumeMounts!.find((m) => m.name === 'jwks')!.mountPath
    expect(seed.data['igw.yaml']).toContain(`${jwksMount}/jwks.json`)
    seed.data['igw.yaml'] = seed.data['igw.yaml']!.replaceAll(`${jwksMount}/`, `${volumeDir(root, 'jwks')}/`)
    // The control plane interpolates the values layer into the seed, so the test's upstream goes to it.
    expect(c.env?.find((e) => e.name === 'IGW_CONTROL_PLANE')?.value).toBe('http://igw-control-plane:7070')
    // The Secret is the operator's: without a value the container cannot be started.
    await expect(runContainer(objs, d.spec.template.spec, c, { ...LOOPBACK })).rejects.toThrow(/IGW_CONTROL_PLANE_TOKEN comes from Secret igw-control-plane-token\/token/)
    const cp = await startRenderedControlPlane(objs, { GRAPH_UPSTREAM_URL: backend.url })
    let proxy: Awaited<ReturnType<typeof runContainer>> | undefined
    try {
      proxy = await runContainer(objs, d.spec.template.spec, c, { ...LOOPBACK, GRAPH_UPSTREAM_URL: backend.url, IGW_REDIS: redis.url, IGW_CONTROL_PLANE: cp.url, IGW_CONTROL_PLANE_TOKEN: await token(['proxy']) }, root)
      const [, , admin] = await proxy.waitFor(LISTENING)
      await waitUntil(async () => (await get(`http://127.0.0.1:${admin}/readyz`)).status === 200)
      type Cfg = { version: number; config: { mode: string; tenants: Record<string, { tier?: string }>; routes: { filters: { name: string; ttlSeconds?: number }[] }[] } }
      const cfg = JSON.parse((await get(`http://127.0.0.1:${admin}/config`)).body) as Cfg
      // version 1 is the seed: the ConfigMap's document with the values layer interpolated by the control plane
      expect(cfg.version).toBe(1)
      expect(cfg.config.mode).toBe('ingress')
      expect(cfg.config.routes[0]!.filters.find((f) => f.name === 'cache')?.ttlSeconds).toBe(30)
      // A change through the control plane reaches the proxy, which reports it applied under its pod name.
      const admin_ = { authorization: `Bearer ${await token(['admin'])}`, 'content-type': 'application/json' }
      const put = await request(`${cp.url}/v1/tenants/acme`, { method: 'PUT', headers: admin_, body: '{"tier":"gold"}' })
      expect(put.statusCode).toBe(201)
      await put.body.dump()
      await waitUntil(async () => (JSON.parse((await get(`http://127.0.0.1:${admin}/config`)).body) as Cfg).config.tenants.acme?.tier === 'gold')
      await waitUntil(async () => {
        const r = await request(`${cp.url}/v1/proxies`, { headers: admin_ })
        const list = (await r.body.json()) as { items: { id: string; appliedVersion: number }[] }
        return list.items.some((p) => p.id === 'igw-test-pod' && p.appliedVersion === 2)
      })
      // The signed last-known-good snapshot is on the state volume for a restart without the control plane.
      const { readdirSync } = await import('node:fs')
      expect(readdirSync(proxy.local('/var/lib/igw')).length).toBeGreaterThan(0)
    } finally {
      // the control plane goes whatever happened to the proxy
      const code = await proxy?.stop()
      await cp.run.stop()
      if (proxy) expect(code, proxy.output()).toBe(0)
    }
  })
})
