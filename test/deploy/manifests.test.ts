// deploy/k8s: every overlay renders offline, every object passes the Kubernetes OpenAPI schema
// with unknown fields rejected, and what igw needs holds in the rendered output: the config
// document in the ConfigMap passes igw's own schema with the values the container gets, probes
// hit the admin port, the pod is locked down, and termination outlasts the drain.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfig } from '../../config/schema.ts'
import { buildProxyConfig, EXIT_CONFIG, parseFlags } from '../../proxy/cli.ts'
import { filterModules } from '../../filters/registry.ts'
import { IGW_BIN, ROOT } from '../helpers/proxy.ts'
import { validateKubeObject } from './kube-schema.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

const K8S = join(ROOT, 'deploy/k8s')
const OVERLAYS = readdirSync(join(K8S, 'overlays'))
const rendered = new Map(OVERLAYS.map((o) => [o, renderKustomize(join(K8S, 'overlays', o))]))
const tmp = mkdtempSync(join(tmpdir(), 'igw-manifests-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

// --- shapes of the objects we read (the schema test below has checked them) -----------------
interface Probe {
  httpGet?: { path: string; port: string | number }
  tcpSocket?: { port: string | number }
  exec?: { command: string[] }
}
interface Container {
  name: string
  image: string
  args?: string[]
  ports?: { name?: string; containerPort: number }[]
  env?: { name: string; value?: string; valueFrom?: { configMapKeyRef?: { name: string; key: string }; secretKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } } }[]
  envFrom?: { configMapRef?: { name: string } }[]
  startupProbe?: Probe
  livenessProbe?: Probe
  readinessProbe?: Probe
  lifecycle?: { preStop?: { sleep?: { seconds: number } } }
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> }
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[] }; seccompProfile?: { type: string } }
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[]
}
interface PodSpec {
  containers: Container[]
  terminationGracePeriodSeconds?: number
  securityContext?: Record<string, unknown> & { seccompProfile?: { type: string } }
  volumes?: { name: string; configMap?: { name: string }; emptyDir?: object; persistentVolumeClaim?: object }[]
}
type Workload = KubeObject & { spec: { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } }

const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet'])
const workloads = (objs: KubeObject[]) => objs.filter((o): o is Workload => WORKLOAD_KINDS.has(o.kind))
const find = (objs: KubeObject[], kind: string, pred: (o: KubeObject) => boolean = () => true) => objs.find((o) => o.kind === kind && pred(o))
const isIgwProxy = (c: Container) => c.args?.[0] === 'proxy'

/** The environment a container sees: envFrom ConfigMaps, then env (which wins). */
function containerEnv(objs: KubeObject[], c: Container): Record<string, string> {
  const cm = (name: string) => (find(objs, 'ConfigMap', (o) => o.metadata.name === name) as (KubeObject & { data?: Record<string, string> }) | undefined)?.data
  const env: Record<string, string> = {}
  for (const f of c.envFrom ?? []) {
    const data = f.configMapRef ? cm(f.configMapRef.name) : undefined
    expect(data, `envFrom ${f.configMapRef?.name} exists`).toBeDefined()
    Object.assign(env, data)
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value
    else if (e.valueFrom?.configMapKeyRef) {
      const v = cm(e.valueFrom.configMapKeyRef.name)?.[e.valueFrom.configMapKeyRef.key]
      expect(v, `${e.name} from ${e.valueFrom.configMapKeyRef.name}/${e.valueFrom.configMapKeyRef.key}`).toBeDefined()
      env[e.name] = v!
    } else if (e.valueFrom?.secretKeyRef) env[e.name] = `<secret ${e.valueFrom.secretKeyRef.name}/${e.valueFrom.secretKeyRef.key}>` // operator-created, never rendered
    else if (e.valueFrom?.fieldRef) env[e.name] = `<${e.valueFrom.fieldRef.fieldPath}>`
  }
  return env
}

/** The config document a proxy container loads: its --config file from the mounted ConfigMap. */
function proxyConfigText(objs: KubeObject[], pod: PodSpec, c: Container): { path: string; text: string } {
  const path = c.args![c.args!.indexOf('--config') + 1]!
  const mount = c.volumeMounts!.find((m) => path.startsWith(`${m.mountPath}/`))!
  expect(mount, `a volume is mounted where ${path} lives`).toBeDefined()
  const volume = pod.volumes!.find((v) => v.name === mount.name)!
  const cm = find(objs, 'ConfigMap', (o) => o.metadata.name === volume.configMap?.name) as KubeObject & { data: Record<string, string> }
  const text = cm.data[path.slice(mount.mountPath.length + 1)]
  expect(text, `${cm.metadata.name} holds ${path}`).toBeDefined()
  return { path, text: text! }
}

/** What `igw proxy --config F` does with that file and environment (flags, env twins, schema). */
function loadAsContainerWould(objs: KubeObject[], pod: PodSpec, c: Container): GatewayConfig {
  const { text } = proxyConfigText(objs, pod, c)
  const env = containerEnv(objs, c)
  const file = join(mkdtempSync(join(tmp, 'cfg-')), 'igw.yaml')
  writeFileSync(file, text)
  const args = c.args!.map((a) => (a.startsWith('/etc/') ? file : a)).slice(1)
  const { flags } = parseFlags(args, env)
  return buildProxyConfig(flags, env)
}

const portNumber = (c: Container, port: string | number) => (typeof port === 'number' ? port : c.ports?.find((p) => p.name === port)?.containerPort)
const listenPort = (listen: string) => Number(listen.slice(listen.lastIndexOf(':') + 1))

describe('offline schema validation (kubernetes-models, strict)', () => {
  it('is live: a typo, a wrong type and an unknown kind are each reported', async () => {
    const deployment = structuredClone(workloads(rendered.get('ingress')!).find((w) => w.metadata.name === 'igw')!)
    expect(await validateKubeObject(deployment)).toEqual([])
    const c = deployment.spec.template.spec.containers[0]! as unknown as Record<string, unknown>
    c.readinesProbe = c.readinessProbe
    expect(await validateKubeObject(deployment)).toEqual([{ path: '/spec/template/spec/containers/0/readinesProbe', message: 'unknown field' }])
    delete c.readinesProbe
    ;(c.securityContext as Record<string, unknown>).runAsNonRoot = 'yes'
    expect((await validateKubeObject(deployment)).map((p) => p.path)).toEqual(['/spec/template/spec/containers/0/securityContext/runAsNonRoot'])
    expect(await validateKubeObject({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'x' } })).toEqual([{ path: '', message: 'no schema for example.com/v1 Widget' }])
  })

  for (const overlay of OVERLAYS) {
    it(`overlays/${overlay}: every object is valid, with no unknown field`, async () => {
      const objs = rendered.get(overlay)!
      expect(objs.length).toBeGreaterThan(3)
      const problems: string[] = []
      for (const o of objs) for (const p of await validateKubeObject(o)) problems.push(`${o.kind}/${o.metadata.name}${p.path}: ${p.message}`)
      expect(problems).toEqual([])
    })
  }
})

describe('what every overlay must hold', () => {
  for (const overlay of OVERLAYS) {
    const objs = rendered.get(overlay)!
    describe(`overlays/${overlay}`, () => {
      it('igw containers use the overlay image (configurable name, pinned tag), never a bare or :latest one', () => {
        const images = workloads(objs).flatMap((w) => w.spec.template.spec.containers.filter((c) => c.args?.[0] === 'proxy' || c.args?.[0] === 'control-plane').map((c) => c.image))
        expect(images.length).toBeGreaterThan(0)
        for (const image of images) expect(image).toMatch(/^[a-z0-9.-]+(:\d+)?\/[a-z0-9/._-]+:\d+\.\d+\.\d+$/)
      })

      it('every igw pod meets the restricted Pod Security profile, read-only root, resources set', () => {
        for (const w of workloads(objs)) {
          const pod = w.spec.template.spec
          for (const c of pod.containers) {
            if (!c.args || !['proxy', 'control-plane'].includes(c.args[0]!)) {
              if (!w.metadata.labels?.['app.kubernetes.io/part-of']) continue // the user's app container
            }
            const sc = c.securityContext!
            const where = `${w.kind}/${w.metadata.name} ${c.name}`
            expect(sc.allowPrivilegeEscalation, where).toBe(false)
            expect(sc.readOnlyRootFilesystem, where).toBe(true)
            expect(sc.capabilities?.drop, where).toEqual(['ALL'])
            expect(sc.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, where).toBe(true)
            expect(sc.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type, where).toBe('RuntimeDefault')
            expect(Number(sc.runAsUser ?? pod.securityContext?.runAsUser), where).toBeGreaterThan(0)
            for (const r of ['cpu', 'memory']) expect(c.resources?.requests?.[r], `${where} requests.${r}`).toBeDefined()
            expect(c.resources?.limits?.memory, `${where} limits.memory`).toBeDefined()
            // Read-only root: whatever the process writes goes to a volume.
            expect(c.volumeMounts?.some((m) => m.mountPath === '/tmp') || c.name === 'redis', `${where} has a writable /tmp`).toBe(true)
          }
        }
      })

      it('igw proxies probe /healthz (startup, liveness) and /readyz (readiness) on the admin port the config listens on', () => {
        const proxies = workloads(objs).flatMap((w) => w.spec.template.spec.containers.filter(isIgwProxy).map((c) => ({ w, c })))
        for (const { w, c } of proxies) {
          const config = loadAsContainerWould(objs, w.spec.template.spec, c)
          const admin = listenPort(config.admin.listen)
          for (const [probe, path] of [['startupProbe', '/healthz'], ['livenessProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
            expect(c[probe]?.httpGet?.path, `${c.name} ${probe}`).toBe(path)
            expect(portNumber(c, c[probe]!.httpGet!.port), `${c.name} ${probe} port`).toBe(admin)
          }
          expect(c.ports!.map((p) => p.containerPort).sort()).toEqual([listenPort(config.listen), admin].sort())
        }
      })

      it('terminationGracePeriodSeconds outlasts the preStop pause plus the drain deadline of the config in force', () => {
        for (const w of workloads(objs)) {
          const pod = w.spec.template.spec
          for (const c of pod.containers.filter(isIgwProxy)) {
            const config = loadAsContainerWould(objs, pod, c)
            const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0
            expect(preStop).toBeGreaterThan(0)
            expect(pod.terminationGracePeriodSeconds ?? 30, `${w.metadata.name}`).toBeGreaterThan(preStop + config.shutdown.drainTimeoutMs / 1000)
          }
        }
      })

      it("the ConfigMap's config document passes igw's own schema with the values the container gets", () => {
        const proxies = workloads(objs).flatMap((w) => w.spec.template.spec.containers.filter(isIgwProxy).map((c) => ({ w, c })))
        for (const { w, c } of proxies) {
          const config = loadAsContainerWould(objs, w.spec.template.spec, c)
          // Validate again through the plain loader entry point: the document must not lean on
          // CLI-only conveniences to be valid.
          expect(validateConfig(config).routes.length).toBeGreaterThan(0)
          // Files the config names are on a mounted volume.
          const mounted = (p: string) => c.volumeMounts!.some((m) => p.startsWith(`${m.mountPath}/`))
          const files: string[] = []
          JSON.stringify(config, (k, v: unknown) => (/File$/.test(k) && typeof v === 'string' ? (files.push(v), v) : v))
          for (const f of files) expect(mounted(f), `${f} is on a mounted volume`).toBe(true)
        }
      })
    })
  }
})

describe('overlay specifics', () => {
  it('ingress: HPA owns the Deployment replica count; PDB, Service and NetworkPolicy select its pods', () => {
    for (const overlay of ['ingress', 'ingress-managed']) {
      const objs = rendered.get(overlay)!
      const d = workloads(objs).find((w) => w.metadata.name === 'igw')!
      const labels = d.spec.template.metadata.labels
      const selects = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v)
      expect((d.spec as { replicas?: number }).replicas).toBeUndefined()
      const hpa = find(objs, 'HorizontalPodAutoscaler') as KubeObject & { spec: { scaleTargetRef: { kind: string; name: string }; minReplicas: number } }
      expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'igw' })
      expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2)
      const pdb = find(objs, 'PodDisruptionBudget') as KubeObject & { spec: { selector: { matchLabels: Record<string, string> } } }
      expect(selects(pdb.spec.selector.matchLabels)).toBe(true)
      const svc = find(objs, 'Service', (o) => o.metadata.name === 'igw') as KubeObject & { spec: { selector: Record<string, string>; ports: { targetPort: string }[] } }
      expect(selects(svc.spec.selector)).toBe(true)
      expect(svc.spec.ports.map((p) => p.targetPort)).toEqual(['http'])
      const np = find(objs, 'NetworkPolicy', (o) => o.metadata.name === 'igw') as KubeObject & { spec: { podSelector: { matchLabels: Record<string, string> } } }
      expect(selects(np.spec.podSelector.matchLabels)).toBe(true)
      // Shared state: every replica gets the same Redis.
      const env = containerEnv(objs, d.spec.template.spec.containers[0]!)
      expect(env.IGW_REDIS).toMatch(/^rediss?:\/\//)
      const config = loadAsContainerWould(objs, d.spec.template.spec, d.spec.template.spec.containers[0]!)
      expect(config.redis?.url).toBe(env.IGW_REDIS)
      expect(config.mode).toBe('ingress')
    }
  })

  it('ingress (in-cluster): Redis and the control plane are there; ingress-managed: external Redis, PostgreSQL, no PVC', () => {
    const inCluster = rendered.get('ingress')!
    expect(find(inCluster, 'StatefulSet', (o) => o.metadata.name === 'igw-redis')).toBeDefined()
    expect(find(inCluster, 'PersistentVolumeClaim', (o) => o.metadata.name === 'igw-control-plane-data')).toBeDefined()
    const managed = rendered.get('ingress-managed')!
    expect(find(managed, 'StatefulSet')).toBeUndefined()
    expect(find(managed, 'PersistentVolumeClaim')).toBeUndefined()
    const cp = workloads(managed).find((w) => w.metadata.name === 'igw-control-plane')!
    const c = cp.spec.template.spec.containers[0]!
    expect(c.args).toContain('$(IGW_DB_URL)')
    expect(c.env?.find((e) => e.name === 'IGW_DB_URL')?.valueFrom?.secretKeyRef).toEqual({ name: 'igw-control-plane-db', key: 'url' })
    // No data volume: the signing key comes from a Secret, so every replica signs alike.
    expect(c.volumeMounts?.map((m) => m.mountPath).sort()).toEqual(['/etc/igw-control-plane/auth', '/etc/igw-control-plane/signing', '/tmp'])
    expect(c.args?.[c.args.indexOf('--signing-key') + 1]).toBe('/etc/igw-control-plane/signing/signing-key.pem')
    expect(containerEnv(managed, workloads(managed).find((w) => w.metadata.name === 'igw')!.spec.template.spec.containers[0]!).IGW_REDIS).toMatch(/^rediss:\/\//)
  })

  it('sidecar: igw joins the app pod, the Service now targets igw, the app port is closed to other pods', () => {
    const objs = rendered.get('sidecar-example')!
    const d = workloads(objs).find((w) => w.metadata.name === 'orders-api')!
    const names = d.spec.template.spec.containers.map((c) => c.name).sort()
    expect(names).toEqual(['app', 'igw'])
    const app = d.spec.template.spec.containers.find((c) => c.name === 'app')!
    const igw = d.spec.template.spec.containers.find((c) => c.name === 'igw')!
    const svc = find(objs, 'Service', (o) => o.metadata.name === 'orders-api') as KubeObject & { spec: { ports: { targetPort: string }[] } }
    expect(portNumber(igw, svc.spec.ports[0]!.targetPort)).toBe(8080)
    // igw forwards to the app's port over the pod's loopback.
    const config = loadAsContainerWould(objs, d.spec.template.spec, igw)
    expect(config.mode).toBe('sidecar')
    expect(config.upstreams.app?.url).toBe(`http://127.0.0.1:${app.ports![0]!.containerPort}`)
    expect(config.redis).toBeUndefined()
    const np = find(objs, 'NetworkPolicy', (o) => o.metadata.name === 'igw-sidecar') as KubeObject & {
      spec: { podSelector: { matchLabels: Record<string, string> }; ingress: { ports: { port: number }[] }[] }
    }
    const labels = d.spec.template.metadata.labels
    expect(Object.entries(np.spec.podSelector.matchLabels).every(([k, v]) => labels[k] === v)).toBe(true)
    const open = np.spec.ingress.flatMap((r) => r.ports.map((p) => p.port))
    expect(open.sort()).toEqual([8080, 9901])
    expect(open).not.toContain(app.ports![0]!.containerPort)
    expect(containerEnv(objs, igw).IGW_WORKERS).toBe('1')
  })
})

describe('the values layer (deploy/k8s/values/values.env)', () => {
  const valuesText = readFileSync(join(K8S, 'values/values.env'), 'utf8')
  interface ValueDoc {
    name: string
    value: string
    maps: string
    filter: string | undefined
  }
  const values: ValueDoc[] = []
  let comment: string[] = []
  for (const line of valuesText.split('\n')) {
    if (line.startsWith('#')) comment.push(line.slice(1).trim())
    else if (/^[A-Z_][A-Z0-9_]*=/.test(line)) {
      const doc = comment.join(' ')
      const [name, ...rest] = line.split('=')
      values.push({ name: name!, value: rest.join('='), maps: /→\s*(.*?)(\(|$)/.exec(doc)?.[1]?.trim() ?? '', filter: /\(filter: ([a-z-]+)\)/.exec(doc)?.[1] })
      comment = []
    } else comment = []
  }
  const configDocs = ['ingress/igw.yaml', 'sidecar/igw.yaml'].map((p) => readFileSync(join(K8S, p), 'utf8'))
  const referenced = new Set(configDocs.flatMap((t) => [...t.matchAll(/\$\{([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1]!)))
  const manifestText = readdirSync(K8S, { recursive: true, encoding: 'utf8' })
    .filter((p) => p.endsWith('.yaml') && !p.endsWith('igw.yaml'))
    .map((p) => readFileSync(join(K8S, p), 'utf8'))
    .join('\n')
  const cliTwins = new Set(['IGW_WORKERS', 'IGW_LOG_LEVEL', 'IGW_REDIS', 'IGW_LISTEN', 'IGW_ADMIN_LISTEN', 'IGW_CONTROL_PLANE'])

  it('documents, for every value, the config key it sets', () => {
    expect(values.length).toBeGreaterThan(5)
    for (const v of values) expect(v.maps, v.name).not.toBe('')
    for (const seed of ['CACHE_HOTPATH_TTL_SECONDS=30', 'CACHE_WRITE_THROUGH=true']) expect(values.map((v) => `${v.name}=${v.value}`)).toContain(seed)
  })

  it('every ${VAR} a config document reads is a value', () => {
    const names = new Set(values.map((v) => v.name))
    expect([...referenced].filter((r) => !names.has(r))).toEqual([])
  })

  it('every value reaches a config key (or waits for its filter to land in filters/registry.ts)', () => {
    const registered = new Set(Object.keys(filterModules))
    const dead: string[] = []
    const waiting: string[] = []
    for (const v of values) {
      const used = referenced.has(v.name) || cliTwins.has(v.name) || manifestText.includes(`key: ${v.name}`)
      if (used) continue
      if (v.filter !== undefined && !registered.has(v.filter)) waiting.push(`${v.name} (filter ${v.filter})`)
      else dead.push(v.name)
    }
    if (waiting.length) console.warn(`values waiting for their filter to be registered: ${waiting.join(', ')}`)
    expect(dead).toEqual([])
  })

  it("the seed's cache.hotpath values and the quota/QoS defaults reach the config every proxy loads; an overlay's value wins", () => {
    const seen: Record<string, number> = {}
    for (const overlay of OVERLAYS) {
      const objs = rendered.get(overlay)!
      for (const w of workloads(objs)) {
        for (const c of w.spec.template.spec.containers.filter(isIgwProxy)) {
          const env = containerEnv(objs, c)
          const config = loadAsContainerWould(objs, w.spec.template.spec, c)
          const cache = config.routes.flatMap((r) => r.filters).find((f) => f.name === 'cache')
          expect(cache, `${overlay}: cache filter`).toBeDefined()
          if (cache?.name !== 'cache') continue
          expect(cache.ttlSeconds).toBe(Number(env.CACHE_HOTPATH_TTL_SECONDS))
          expect(cache.invalidation.writeThrough).toBe(env.CACHE_WRITE_THROUGH === 'true')
          expect(config.quotas.defaults.graphql).toMatchObject({
            rate: Number(env.QUOTA_DEFAULT_RATE_PER_SEC),
            burst: Number(env.QUOTA_DEFAULT_BURST),
            limitPerDay: Number(env.QUOTA_DEFAULT_LIMIT_PER_DAY),
          })
          expect(config.quotas.qos.maxInFlight).toBe(Number(env.QOS_MAX_IN_FLIGHT))
          if (config.mode === 'ingress') expect(config.quotas.redis.onOutage).toBe(env.QUOTA_REDIS_FAILURE_POLICY)
          seen[overlay] = cache.ttlSeconds
        }
      }
    }
    // The seed's defaults (values.env), and the override in overlays/ingress-managed/values.env.
    expect(seen).toEqual({ ingress: 30, 'ingress-connected': 30, 'sidecar-example': 30, 'ingress-managed': 15 })
  })

  it('a bad value is refused by igw itself (exit 78, naming the key), as the pod would be at start', () => {
    const objs = rendered.get('ingress')!
    const d = workloads(objs).find((w) => w.metadata.name === 'igw')!
    const c = d.spec.template.spec.containers[0]!
    const { text } = proxyConfigText(objs, d.spec.template.spec, c)
    const file = join(mkdtempSync(join(tmp, 'cli-')), 'igw.yaml')
    writeFileSync(file, text)
    const env = { ...process.env, ...containerEnv(objs, c) }
    const ok = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', file], { env, encoding: 'utf8' })
    expect(ok.stderr).toBe('')
    expect(ok.status).toBe(0)
    const bad = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', file], { env: { ...env, DRAIN_TIMEOUT_MS: 'soon' }, encoding: 'utf8' })
    expect(bad.status).toBe(EXIT_CONFIG)
    expect(bad.stderr).toMatch(/shutdown\.drainTimeoutMs/)
  })
})
