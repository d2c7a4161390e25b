// What an operator meets on the rendered overlays, sweep 17:
//  - the control plane on PostgreSQL runs two replicas behind one Service: a node drain must not
//    evict both at once (PodDisruptionBudget), and a replica being deleted must keep answering
//    while its endpoint removal reaches every kube-proxy (preStop pause), as the proxies do;
//  - the Prometheus Operator component scrapes every igw pod the prometheus.io annotations name,
//    sidecars included (their pods carry the app's labels, never part-of: intelgraph-gateway);
//  - a sidecar (no Redis) keeps the day's quota usage across a container restart: its state
//    volume outlives the container, and the config writes the usage there (a restarted container
//    handed every tenant a fresh daily quota).
import { generateKeyPairSync } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { request } from 'undici'
import { afterAll, describe, expect, it } from 'vitest'
import { startDemoBackend } from '../helpers/backends.ts'
import { freePort } from '../helpers/ports.ts'
import { ROOT } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'
import { podRoot, runContainer, volumeDir, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

const K8S = join(ROOT, 'deploy/k8s')
const tmp = mkdtempSync(join(tmpdir(), 'igw-k8s-sweep17-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

type Container = RunContainer & {
  ports?: { name?: string; containerPort: number }[]
  lifecycle?: { preStop?: { sleep?: { seconds: number } } }
  readinessProbe?: { httpGet?: { path: string; port: string | number } }
}
type PodSpec = RunPod & { containers: Container[]; terminationGracePeriodSeconds?: number }
type Workload = KubeObject & { spec: { replicas?: number; selector: { matchLabels: Record<string, string> }; template: { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } } }
type Pdb = KubeObject & { spec: { maxUnavailable?: number | string; minAvailable?: number | string; selector: { matchLabels?: Record<string, string> } } }
type PodMonitor = KubeObject & { spec: { selector: { matchLabels?: Record<string, string> }; namespaceSelector?: { any?: boolean; matchNames?: string[] }; podMetricsEndpoints: { port?: string; path?: string }[] } }

const workloads = (objs: KubeObject[]) => objs.filter((o): o is Workload => o.kind === 'Deployment' || o.kind === 'StatefulSet')
const selects = (sel: Record<string, string> | undefined, labels: Record<string, string> | undefined) => sel !== undefined && Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels?.[k] === v)
/** Seconds after deletion at which the kubelet sends the container SIGTERM: after its own preStop hook. */
const sigtermAt = (c: Container) => c.lifecycle?.preStop?.sleep?.seconds ?? 0

/** Pods a voluntary eviction may take at once under the PDBs that select them (Infinity: no PDB). */
function evictableAtOnce(objs: KubeObject[], w: Workload): number {
  const pdbs = objs.filter((o): o is Pdb => o.kind === 'PodDisruptionBudget' && (o.metadata.namespace ?? '') === (w.metadata.namespace ?? '') && selects((o as Pdb).spec.selector.matchLabels, w.spec.template.metadata.labels))
  if (pdbs.length === 0) return Infinity
  const replicas = w.spec.replicas ?? 1
  const abs = (v: number | string, round: (x: number) => number) => (typeof v === 'number' ? v : round((replicas * Number(v.replace('%', ''))) / 100))
  return Math.min(...pdbs.map((p) => (p.spec.maxUnavailable !== undefined ? abs(p.spec.maxUnavailable, Math.ceil) : replicas - abs(p.spec.minAvailable!, Math.ceil))))
}

describe('control plane on PostgreSQL (overlays/ingress-managed): two replicas behind one Service', () => {
  const objs = renderKustomize(join(K8S, 'overlays/ingress-managed'))
  const d = workloads(objs).find((w) => w.metadata.name === 'igw-control-plane')!
  const c = d.spec.template.spec.containers.find((x) => x.name === 'control-plane')!

  it('a drain evicts one replica at a time and can always evict one (PodDisruptionBudget)', () => {
    expect(d.spec.replicas).toBeGreaterThan(1)
    const n = evictableAtOnce(objs, d)
    expect(n, 'replicas a drain may evict at once').toBeLessThan(d.spec.replicas!)
    expect(n, 'a PDB that allows no eviction blocks every node drain').toBeGreaterThanOrEqual(1)
  })

  it('a request that reaches a replica during its endpoint removal is answered; it then stops within its grace period', async () => {
    // The rendered container with its args ($(IGW_DB_URL) expanded), env and volumes. The two
    // Secrets are the operator's: a SQLite file stands in for the PostgreSQL URL (the store does
    // not matter to termination), and a fresh ed25519 key for the signing Secret.
    const root = podRoot()
    const signing = volumeDir(root, 'signing')
    mkdirSync(signing, { recursive: true })
    writeFileSync(join(signing, 'signing-key.pem'), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o644 })
    const port = await freePort()
    const args = c.args!.map((a) => (a === ':7070' ? `127.0.0.1:${port}` : a))
    const run = await runContainer(objs, d.spec.template.spec, { ...c, args }, { IGW_DB_URL: 'sqlite:/tmp/igw.db', IGW_METRICS_LISTEN: `127.0.0.1:${await freePort()}` }, root)
    const probe = `http://127.0.0.1:${port}${c.readinessProbe!.httpGet!.path}`
    const ask = async () => {
      const r = await request(probe)
      return { status: r.statusCode, body: await r.body.text() }
    }
    let term: NodeJS.Timeout | undefined
    try {
      await waitUntil(async () => {
        if (run.child.exitCode !== null) throw new Error(`control plane exited:\n${run.output()}`)
        return ask().then(
          (r) => r.status === 200,
          () => false,
        )
      }, 20_000)
      // The pod is deleted: the kubelet runs the preStop hook, then sends SIGTERM; meanwhile the
      // endpoint removal travels to every kube-proxy, which still send new connections here for
      // about a second.
      const deleted = Date.now()
      let sent = false
      term = setTimeout(() => {
        sent = true
        run.child.kill('SIGTERM')
      }, sigtermAt(c) * 1000)
      await new Promise((r) => setTimeout(r, 1_000))
      const during = await ask().catch((err: Error) => ({ status: 0, body: `${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}` }))
      expect(during, 'answered 1 s after deletion, while kube-proxies still route here').toMatchObject({ status: 200 })
      // The rest of the preStop pause proves nothing more: SIGTERM now, and the pause's remainder
      // still counted against the grace period below (it was seconds of waiting).
      let skippedMs = 0
      if (!sent) {
        clearTimeout(term)
        skippedMs = Math.max(0, sigtermAt(c) * 1000 - (Date.now() - deleted))
        run.child.kill('SIGTERM')
      }
      // ...and it is gone well inside terminationGracePeriodSeconds (no SIGKILL).
      await run.waitFor(/shutting down/, (sigtermAt(c) + 10) * 1000)
      const code = await new Promise<number | null>((resolve) => (run.child.exitCode !== null ? resolve(run.child.exitCode) : run.child.once('exit', (x) => resolve(x))))
      expect(code).toBe(0)
      expect((Date.now() - deleted + skippedMs) / 1000).toBeLessThan(d.spec.template.spec.terminationGracePeriodSeconds ?? 30)
    } finally {
      clearTimeout(term)
      await run.stop()
    }
  }, 60_000)
})

describe('components/podmonitor: every pod the prometheus.io annotations name is scraped', () => {
  /** An app's own kustomization with the sidecar (sidecar-example) and the podmonitor component added. */
  function sidecarWithPodMonitor(): KubeObject[] {
    const dir = mkdtempSync(join(tmp, 'app-'))
    const rel = relative(dir, K8S)
    writeFileSync(
      join(dir, 'kustomization.yaml'),
      ['apiVersion: kustomize.config.k8s.io/v1beta1', 'kind: Kustomization', 'namespace: orders', `resources: [${rel}/overlays/sidecar-example]`, `components: [${rel}/components/podmonitor]`, ''].join('\n'),
    )
    return renderKustomize(dir)
  }

  const cases: [string, () => KubeObject[]][] = [
    ['overlays/ingress-managed', () => renderKustomize(join(K8S, 'overlays/ingress-managed'))],
    ['overlays/sidecar-example + components/podmonitor', sidecarWithPodMonitor],
  ]
  for (const [name, render] of cases) {
    it(`${name}: a PodMonitor endpoint selects each annotated pod on the annotated port`, () => {
      const objs = render()
      const monitors = objs.filter((o): o is PodMonitor => o.kind === 'PodMonitor')
      expect(monitors.length).toBeGreaterThan(0)
      const annotated = workloads(objs).filter((w) => w.spec.template.metadata.annotations?.['prometheus.io/scrape'] === 'true')
      expect(annotated.length).toBeGreaterThan(0)
      const unscraped: string[] = []
      for (const w of annotated) {
        const port = Number(w.spec.template.metadata.annotations!['prometheus.io/port'])
        const path = w.spec.template.metadata.annotations!['prometheus.io/path'] ?? '/metrics'
        const portName = w.spec.template.spec.containers.flatMap((c) => c.ports ?? []).find((p) => p.containerPort === port)?.name
        expect(portName, `${w.metadata.name}: the annotated port ${port} is a named container port`).toBeDefined()
        const ns = w.metadata.namespace ?? ''
        const hit = monitors.some(
          (m) =>
            (m.spec.namespaceSelector?.any === true || (m.spec.namespaceSelector?.matchNames ?? [m.metadata.namespace ?? '']).includes(ns)) &&
            selects(m.spec.selector.matchLabels, w.spec.template.metadata.labels) &&
            m.spec.podMetricsEndpoints.some((e) => e.port === portName && (e.path ?? '/metrics') === path),
        )
        if (!hit) unscraped.push(`${w.kind} ${ns}/${w.metadata.name} (port ${portName}, pod labels ${JSON.stringify(w.spec.template.metadata.labels)})`)
      }
      expect(unscraped).toEqual([])
    })
  }
})

describe('sidecar (overlays/sidecar-example): a restarted igw container', () => {
  it("keeps each tenant's daily quota usage (the emptyDir state volume outlives the container)", async () => {
    const objs = renderKustomize(join(K8S, 'overlays/sidecar-example'))
    const d = workloads(objs).find((w) => w.spec.template.spec.containers.some((c) => c.name === 'igw'))!
    const c = d.spec.template.spec.containers.find((x) => x.name === 'igw')!
    const app = await startDemoBackend()
    // One pod: its volumes (emptyDir igw-state among them) stay while its igw container restarts.
    const root = podRoot()
    const env = { IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0', APP_PORT: String(app.port) }
    const LISTENING = /"listen":"[^"]*:(\d+)","admin":"[^"]*:(\d+)".*"msg":"igw proxy listening"/
    /** The container's daily remaining units after one more request by tenant acme. */
    const dailyRemaining = async (port: string) => {
      // connection: close: no idle keep-alive for the SIGTERM below to wait its drain grace on.
      const r = await request(`http://127.0.0.1:${port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', connection: 'close' }, body: JSON.stringify({ query: '{ hello(name: "quota") }' }) })
      await r.body.dump()
      expect(r.statusCode).toBe(200)
      const m = /"daily";r=(\d+)/.exec(String(r.headers['ratelimit'] ?? ''))
      expect(m, `RateLimit header: ${String(r.headers['ratelimit'])}`).not.toBeNull()
      return Number(m![1])
    }
    let first: Awaited<ReturnType<typeof runContainer>> | undefined
    let second: Awaited<ReturnType<typeof runContainer>> | undefined
    try {
      first = await runContainer(objs, d.spec.template.spec, c, env, root)
      const [, port] = await first.waitFor(LISTENING)
      let before = 0
      for (let i = 0; i < 5; i++) before = await dailyRemaining(port!)
      // The container restarts (the kubelet's SIGTERM after a failed liveness probe, say): not
      // run.stop(), which would also delete the pod's volumes.
      first.child.kill('SIGTERM')
      await new Promise<void>((resolve) => (first!.child.exitCode !== null ? resolve() : first!.child.once('exit', () => resolve())))
      expect(first.child.exitCode).toBe(0)
      second = await runContainer(objs, d.spec.template.spec, c, env, root)
      const [, port2] = await second.waitFor(LISTENING)
      const after = await dailyRemaining(port2!)
      expect(after, `daily remaining went from ${before} to ${after} across the restart`).toBeLessThan(before)
    } finally {
      if (first && first.child.exitCode === null) first.child.kill('SIGKILL')
      await second?.stop() // removes the pod's directory
      if (!second) rmSync(root, { recursive: true, force: true })
      await app.close()
    }
  }, 60_000)
})
