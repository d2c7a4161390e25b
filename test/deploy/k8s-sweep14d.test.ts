// What a Kubernetes operator meets after `kubectl apply -k`, checked on the rendered overlays:
//  - the igw pods' NetworkPolicy lets them reach every address their config dials (DNS, Redis,
//    the control plane, the upstream), evaluated with the NetworkPolicy rules Kubernetes applies;
//  - in a sidecar pod, no container is sent SIGTERM before igw: the kubelet runs each container's
//    preStop hook and then signals that container, so an app without igw's pause stops while igw
//    still takes traffic during the endpoint removal, and every request in that window fails.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, describe, expect, it } from 'vitest'
import type { GatewayConfig } from '../../config/schema.ts'
import { buildProxyConfig, parseFlags } from '../../proxy/cli.ts'
import { startDemoBackend } from '../helpers/backends.ts'
import { ROOT } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'
import { configMapData, runContainer, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

const K8S = join(ROOT, 'deploy/k8s')
const OVERLAYS = readdirSync(join(K8S, 'overlays'))
const rendered = new Map(OVERLAYS.map((o) => [o, renderKustomize(join(K8S, 'overlays', o))]))
const tmp = mkdtempSync(join(tmpdir(), 'igw-k8s-sweep-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

// --- shapes --------------------------------------------------------------------------------
interface Port {
  name?: string
  containerPort: number
  protocol?: string
}
type Container = RunContainer & {
  ports?: Port[]
  lifecycle?: { preStop?: { sleep?: { seconds: number }; exec?: object; httpGet?: object } }
  readinessProbe?: { httpGet?: { path: string } }
}
type PodSpec = RunPod & { containers: Container[]; volumes?: (NonNullable<RunPod['volumes']>[number] & { configMap?: { name: string } })[] }
type Workload = KubeObject & { spec: { template: { metadata: { labels?: Record<string, string> }; spec: PodSpec } } }
interface Selector {
  matchLabels?: Record<string, string>
  matchExpressions?: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[]
}
interface Peer {
  podSelector?: Selector
  namespaceSelector?: Selector
  ipBlock?: { cidr: string; except?: string[] }
}
interface PolicyPort {
  port?: number | string
  endPort?: number
  protocol?: string
}
type NetworkPolicy = KubeObject & { spec: { podSelector: Selector; policyTypes?: string[]; egress?: { to?: Peer[]; ports?: PolicyPort[] }[] } }
type Service = KubeObject & { spec: { selector?: Record<string, string>; ports: { name?: string; port: number; targetPort?: number | string; protocol?: string }[] } }

const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet'])
const workloads = (objs: KubeObject[]) => objs.filter((o): o is Workload => WORKLOAD_KINDS.has(o.kind))
const isIgwProxy = (c: Container) => c.args?.[0] === 'proxy'

// --- what the container loads (as test/deploy/manifests.test.ts does) ----------------------
function containerEnv(objs: KubeObject[], c: Container): Record<string, string> {
  const env: Record<string, string> = {}
  for (const f of c.envFrom ?? []) if (f.configMapRef) Object.assign(env, configMapData(objs, f.configMapRef.name))
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value
    else if (e.valueFrom?.configMapKeyRef) env[e.name] = configMapData(objs, e.valueFrom.configMapKeyRef.name)[e.valueFrom.configMapKeyRef.key]!
    else if (e.valueFrom?.secretKeyRef) env[e.name] = 'secret'
    else if (e.valueFrom?.fieldRef) env[e.name] = 'pod-name'
  }
  return env
}

function loadAsContainerWould(objs: KubeObject[], pod: PodSpec, c: Container): { config: GatewayConfig; env: Record<string, string> } {
  const path = c.args![c.args!.indexOf('--config') + 1]!
  const mount = c.volumeMounts!.find((m) => path.startsWith(`${m.mountPath}/`))!
  const volume = pod.volumes!.find((v) => v.name === mount.name)!
  const text = configMapData(objs, volume.configMap!.name)[path.slice(mount.mountPath.length + 1)]!
  const file = join(mkdtempSync(join(tmp, 'cfg-')), 'igw.yaml')
  writeFileSync(file, text)
  const env = containerEnv(objs, c)
  const { flags } = parseFlags(
    c.args!.slice(1).map((a) => (a === path ? file : a)),
    env,
  )
  return { config: buildProxyConfig(flags, env), env }
}

// --- NetworkPolicy egress, as Kubernetes evaluates it ----------------------------------------
function selects(sel: Selector | undefined, labels: Record<string, string>): boolean {
  if (sel === undefined) return true
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key)
    if (e.operator === 'Exists' && !has) return false
    if (e.operator === 'DoesNotExist' && has) return false
    if (e.operator === 'In' && !(has && e.values!.includes(labels[e.key]!))) return false
    if (e.operator === 'NotIn' && has && e.values!.includes(labels[e.key]!)) return false
  }
  return true
}

function ipv4InCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/')
  if (isIP(net!) !== 4 || isIP(ip) !== 4) return false
  const n = (s: string) => s.split('.').reduce((a, o) => (a << 8) + Number(o), 0) >>> 0
  const mask = Number(bits) === 0 ? 0 : (~0 << (32 - Number(bits))) >>> 0
  return (n(ip) & mask) === (n(net!) & mask)
}

/** Where a connection goes: a pod (its namespace, labels and named ports) or an address outside the cluster. */
type Destination =
  | { kind: 'pod'; namespace: string; namespaceLabels: Record<string, string>; podLabels: Record<string, string>; port: number; protocol: string; namedPorts: Port[] }
  | { kind: 'external'; ip: string; port: number; protocol: string }

function peerAdmits(peer: Peer, policyNamespace: string, d: Destination): boolean {
  if (peer.ipBlock) return d.kind === 'external' && ipv4InCidr(d.ip, peer.ipBlock.cidr) && !(peer.ipBlock.except ?? []).some((x) => ipv4InCidr(d.ip, x))
  if (d.kind !== 'pod') return false // pod and namespace selectors only ever select pods
  if (peer.namespaceSelector === undefined && d.namespace !== policyNamespace) return false
  if (peer.namespaceSelector !== undefined && !selects(peer.namespaceSelector, d.namespaceLabels)) return false
  return selects(peer.podSelector, d.podLabels)
}

function portAdmits(p: PolicyPort, d: Destination): boolean {
  if ((p.protocol ?? 'TCP') !== d.protocol) return false
  if (p.port === undefined) return true
  if (typeof p.port === 'string') return d.kind === 'pod' && d.namedPorts.some((n) => n.name === p.port && n.containerPort === d.port && (n.protocol ?? 'TCP') === d.protocol)
  return d.port >= p.port && d.port <= (p.endPort ?? p.port)
}

/** Whether the pod may open this connection: allowed when no Egress policy selects it, else when one rule of one policy admits it. */
function egressAllowed(objs: KubeObject[], podNamespace: string, podLabels: Record<string, string>, d: Destination): boolean {
  const policies = objs.filter((o): o is NetworkPolicy => o.kind === 'NetworkPolicy' && (o.metadata.namespace ?? 'default') === podNamespace && selects((o as NetworkPolicy).spec.podSelector, podLabels))
  const egress = policies.filter((p) => (p.spec.policyTypes ?? (p.spec.egress ? ['Ingress', 'Egress'] : ['Ingress'])).includes('Egress'))
  if (egress.length === 0) return true
  return egress.some((p) =>
    (p.spec.egress ?? []).some((rule) => {
      const toOk = !rule.to?.length || rule.to.some((peer) => peerAdmits(peer, podNamespace, d))
      const portOk = !rule.ports?.length || rule.ports.some((pp) => portAdmits(pp, d))
      return toOk && portOk
    }),
  )
}

/**
 * The destination of a URL a pod in `namespace` dials: a Service rendered in the overlay (its
 * selected pods and target port), another namespace's Service (a pod there, in a namespace that
 * carries the label the docs tell operators to set on upstream namespaces), loopback (never
 * filtered: undefined), or an address outside the cluster.
 */
function destinationOf(objs: KubeObject[], namespace: string, url: string, defaultPort: number): Destination | undefined {
  const u = new URL(url)
  const host = u.hostname
  const port = u.port ? Number(u.port) : defaultPort
  if (host === 'localhost' || host.startsWith('127.') || host === '[::1]') return undefined
  const parts = host.split('.')
  const inCluster = parts.length <= 2 || /\.svc(\.cluster\.local)?$/.test(host)
  if (!inCluster) return { kind: 'external', ip: '203.0.113.7', port, protocol: 'TCP' } // documentation range: an address outside every cluster CIDR
  const [name, ns = namespace] = parts
  const nsLabels = { 'kubernetes.io/metadata.name': ns, 'igw.intelgraph.io/upstream': 'allowed' }
  const svc = objs.find((o): o is Service => o.kind === 'Service' && o.metadata.name === name && (o.metadata.namespace ?? 'default') === ns)
  if (!svc) return { kind: 'pod', namespace: ns, namespaceLabels: nsLabels, podLabels: {}, port, protocol: 'TCP', namedPorts: [] }
  const sp = svc.spec.ports.find((p) => p.port === port)
  expect(sp, `Service ${name} has port ${port}`).toBeDefined()
  const target = workloads(objs).find((w) => (w.metadata.namespace ?? 'default') === ns && Object.entries(svc.spec.selector ?? {}).every(([k, v]) => w.spec.template.metadata.labels?.[k] === v))
  expect(target, `Service ${name} selects a rendered workload`).toBeDefined()
  const namedPorts = target!.spec.template.spec.containers.flatMap((c) => c.ports ?? [])
  const tp = sp!.targetPort ?? sp!.port
  const podPort = typeof tp === 'number' ? tp : namedPorts.find((p) => p.name === tp)?.containerPort
  expect(podPort, `Service ${name} targetPort ${tp}`).toBeDefined()
  return { kind: 'pod', namespace: ns, namespaceLabels: { 'kubernetes.io/metadata.name': ns }, podLabels: target!.spec.template.metadata.labels ?? {}, port: podPort!, protocol: sp!.protocol ?? 'TCP', namedPorts }
}

describe('NetworkPolicy: an igw proxy may reach everything its config dials', () => {
  const KUBE_DNS = (protocol: string): Destination => ({
    kind: 'pod',
    namespace: 'kube-system',
    namespaceLabels: { 'kubernetes.io/metadata.name': 'kube-system' },
    podLabels: { 'k8s-app': 'kube-dns' },
    port: 53,
    protocol,
    namedPorts: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }, { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' }],
  })

  it('the evaluator is live: named ports, namespace scoping and ipBlocks decide as Kubernetes does', () => {
    const objs = rendered.get('ingress')!
    const labels = { 'app.kubernetes.io/name': 'igw', 'app.kubernetes.io/component': 'ingress' }
    const redis = destinationOf(objs, 'igw-system', 'redis://igw-redis:6379', 6379)!
    if (redis.kind !== 'pod') throw new Error('igw-redis is a rendered Service')
    expect(redis).toMatchObject({ kind: 'pod', port: 6379, podLabels: { 'app.kubernetes.io/component': 'redis' } })
    expect(egressAllowed(objs, 'igw-system', labels, redis)).toBe(true)
    expect(egressAllowed(objs, 'igw-system', labels, { ...redis, port: 6380 })).toBe(false)
    expect(egressAllowed(objs, 'igw-system', labels, { ...redis, namespace: 'other' })).toBe(false)
    expect(egressAllowed(objs, 'igw-system', labels, { kind: 'external', ip: '198.51.100.1', port: 443, protocol: 'TCP' })).toBe(false)
    expect(egressAllowed(objs, 'igw-system', labels, KUBE_DNS('UDP'))).toBe(true)
    // A pod no Egress policy selects may go anywhere.
    expect(egressAllowed(objs, 'igw-system', { app: 'other' }, { kind: 'external', ip: '198.51.100.1', port: 443, protocol: 'TCP' })).toBe(true)
    const withBlock: KubeObject = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'x', namespace: 'n' }, spec: { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] } }], ports: [{ port: 6380 }] }] } }
    expect(egressAllowed([withBlock], 'n', {}, { kind: 'external', ip: '10.2.3.4', port: 6380, protocol: 'TCP' })).toBe(true)
    expect(egressAllowed([withBlock], 'n', {}, { kind: 'external', ip: '10.1.3.4', port: 6380, protocol: 'TCP' })).toBe(false)
    expect(egressAllowed([withBlock], 'n', {}, { kind: 'external', ip: '10.2.3.4', port: 6380, protocol: 'UDP' })).toBe(false)
  })

  for (const overlay of OVERLAYS) {
    it(`overlays/${overlay}: DNS (UDP and TCP), Redis, the control plane and every upstream are reachable`, () => {
      const objs = rendered.get(overlay)!
      let checked = 0
      for (const w of workloads(objs)) {
        const ns = w.metadata.namespace ?? 'default'
        const podLabels = w.spec.template.metadata.labels ?? {}
        for (const c of w.spec.template.spec.containers.filter(isIgwProxy)) {
          const { config, env } = loadAsContainerWould(objs, w.spec.template.spec, c)
          const dials: [string, Destination | undefined][] = [
            ['DNS over UDP', KUBE_DNS('UDP')],
            ['DNS over TCP (answers over 512 bytes)', KUBE_DNS('TCP')],
          ]
          if (config.redis?.url) dials.push([`Redis ${config.redis.url}`, destinationOf(objs, ns, config.redis.url, 6379)])
          if (env.IGW_CONTROL_PLANE) dials.push([`control plane ${env.IGW_CONTROL_PLANE}`, destinationOf(objs, ns, env.IGW_CONTROL_PLANE, 80)])
          for (const [name, u] of Object.entries(config.upstreams)) {
            const url = (u as { url?: string }).url
            if (url) dials.push([`upstream ${name} ${url}`, destinationOf(objs, ns, url, url.startsWith('https:') ? 443 : 80)])
          }
          const blocked = dials.filter(([, d]) => d !== undefined && !egressAllowed(objs, ns, podLabels, d)).map(([what]) => what)
          expect(blocked, `${overlay}: ${w.metadata.name}/${c.name} egress`).toEqual([])
          checked++
        }
      }
      expect(checked).toBeGreaterThan(0)
    })
  }
})

describe('sidecar pods: termination order', () => {
  const objs = rendered.get('sidecar-example')!
  const d = workloads(objs).find((w) => w.spec.template.spec.containers.some((c) => c.name === 'igw'))!
  const pod = d.spec.template.spec
  const igw = pod.containers.find((c) => c.name === 'igw')!
  /** Seconds after deletion at which the kubelet sends SIGTERM to a container: after its own preStop hook. */
  const sigtermAt = (c: Container) => c.lifecycle?.preStop?.sleep?.seconds ?? 0

  it('no container of the pod is sent SIGTERM before igw (igw keeps forwarding to it through its preStop pause)', () => {
    expect(sigtermAt(igw)).toBeGreaterThan(0)
    for (const c of pod.containers) expect(sigtermAt(c), `${c.name} gets SIGTERM ${sigtermAt(c)} s after deletion, igw ${sigtermAt(igw)} s`).toBeGreaterThanOrEqual(sigtermAt(igw))
  })

  it('a request that arrives during the endpoint-removal pause is answered: the app is still up when igw forwards it', async () => {
    // The pod's containers, run with their rendered lifecycle: the app (a real GraphQL server on
    // the port igw forwards to) and the igw container with its rendered args, env and ConfigMaps.
    const app = await startDemoBackend()
    let appUp = true
    const run = await runContainer(objs, pod, igw, { IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0', APP_PORT: String(app.port) })
    try {
      const [, port, admin] = await run.waitFor(/"listen":"[^"]*:(\d+)","admin":"[^"]*:(\d+)".*"msg":"igw proxy listening"/)
      await waitUntil(async () => (await request(`http://127.0.0.1:${admin}/readyz`).then(async (r) => (await r.body.dump(), r.statusCode))) === 200, 15_000)
      // A new name each time: the route's cache must not answer for the app.
      const ask = (name: string) => request(`http://127.0.0.1:${port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: `{ hello(name: "${name}") }` }) })
      const before = await ask('before')
      expect(before.statusCode).toBe(200)
      await before.body.dump()
      // The pod is deleted: every container whose SIGTERM comes before igw's does so now, while
      // igw sleeps in its preStop hook and kube-proxies and load balancers still send it traffic.
      for (const c of pod.containers) {
        if (c.name === igw.name || sigtermAt(c) >= sigtermAt(igw)) continue
        await app.close() // the app's SIGTERM: a server stops listening and exits
        appUp = false
      }
      const during = await ask('pause')
      const body = await during.body.text()
      expect({ status: during.statusCode, body }).toEqual({ status: 200, body: JSON.stringify({ data: { hello: 'Hello, pause!' } }) })
    } finally {
      await run.stop()
      if (appUp) await app.close()
    }
  })
})
