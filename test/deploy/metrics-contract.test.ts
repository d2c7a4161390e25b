// Every metric the rules and dashboards read is a metric igw really exports. A real proxy starts
// with every filter registered in filters/registry.ts (their settings taken from the config
// examples and the deploy config documents), against the real demo backend and a real Redis,
// and a real control plane starts beside it (SQLite, a plugin trust file, its /metrics
// listener); some traffic goes through each (requests, a config push with ACK and NACK, plugin
// uploads accepted and refused); both /metrics are scraped. Metrics of a filter that is not
// registered yet are listed as waiting (skipped), never silently passed.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { filterModules } from '../../filters/registry.ts'
import { loadPluginTrust } from '../../control-plane/plugin-trust.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage, writeTrustFile } from '../helpers/plugins.ts'
import { ROOT, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { dashboardExprs, familyOf, metricContract, ruleExprs, selectors } from './promql.ts'

const contract = metricContract(ROOT)
const registered = new Set(Object.keys(filterModules))
const ownerPresent = (owner: string) => owner === 'core' || owner === 'control-plane' || (owner.startsWith('filter:') && registered.has(owner.slice(7)))
const uses = [...ruleExprs(ROOT).exprs, ...dashboardExprs(ROOT)].flatMap((e) => selectors(e.expr).selectors.map((s) => ({ ...s, where: e.where })))
const recorded = ruleExprs(ROOT).recorded

/** values.env defaults, so the deploy config documents interpolate. */
function valuesEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of readFileSync(join(ROOT, 'deploy/k8s/values/values.env'), 'utf8').split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line)
    if (m) env[m[1]!] = m[2]!
  }
  return env
}

interface RawDoc {
  tenants?: Record<string, unknown>
  routes?: { filters?: { name: string }[] }[]
  [section: string]: unknown
}

/** Sections a filter's settings may lean on (dlp:, quotas:, persistedDocuments: …), not the listener's. */
const OWN_SECTIONS = new Set(['mode', 'listen', 'admin', 'workers', 'workerHeap', 'listener', 'forwarded', 'log', 'shutdown', 'redis', 'upstreams', 'routes', 'tenants'])
const scratch = mkdtempSync(join(tmpdir(), 'igw-contract-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

/** Every filter entry the shipped config documents use, in chain order of first appearance. */
function exampleDocs(): RawDoc[] {
  const files = [
    ...readdirSync(join(ROOT, 'config/examples')).filter((f) => /\.ya?ml$/.test(f)).sort().reverse().map((f) => join(ROOT, 'config/examples', f)), // sidecar before ingress: header tenants, no JWT needed
    join(ROOT, 'deploy/k8s/sidecar/igw.yaml'),
    join(ROOT, 'deploy/k8s/ingress/igw.yaml'),
  ]
  // Files an example would create beside itself (a DLP keyring) go to a scratch directory.
  const env = { ...process.env, ...valuesEnv(), DLP_KEYRING: join(scratch, 'dlp-keyring.json') }
  return files.map((f) => parseConfigText(readFileSync(f, 'utf8'), f, env) as RawDoc)
}

/**
 * One route whose chain holds every registered filter, each with settings that validate. A
 * registered filter that no shipped config document shows how to configure (and that has no
 * valid all-defaults form) is left out and reported: its metrics then wait.
 */
function allFiltersConfig(upstream: string, redisUrl: string): { config: ReturnType<typeof validateConfig>; unconfigured: string[] } {
  const docs = exampleDocs()
  const candidates = new Map<string, { entry: { name: string }; doc: RawDoc | undefined }[]>()
  const order: string[] = []
  for (const d of docs)
    for (const r of d.routes ?? [])
      for (const f of r.filters ?? []) {
        if (!registered.has(f.name)) continue
        if (!candidates.has(f.name)) {
          candidates.set(f.name, [])
          order.push(f.name)
        }
        candidates.get(f.name)!.push({ entry: f, doc: d })
      }
  for (const name of registered) if (!order.includes(name)) order.push(name)
  const tenants = Object.assign({}, ...docs.map((d) => d.tenants ?? {})) as Record<string, unknown>
  const chain: { name: string }[] = []
  let sections: Record<string, unknown> = {}
  const unconfigured: string[] = []
  const sectionsOf = (d: RawDoc | undefined) => Object.fromEntries(Object.entries(d ?? {}).filter(([k]) => !OWN_SECTIONS.has(k)))
  const doc = (filters: { name: string }[], extra: Record<string, unknown>) => ({ ...extra, listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, redis: { url: redisUrl }, tenants, routes: [{ name: 'graphql', upstream, filters }] })
  for (const name of order) {
    const tries = [...(candidates.get(name) ?? []), { entry: { name }, doc: undefined }]
    const ok = tries.find((t) => {
      try {
        validateConfig(doc([...chain, t.entry], { ...sectionsOf(t.doc), ...sections }))
        return true
      } catch {
        return false
      }
    })
    if (ok) {
      chain.push(ok.entry)
      sections = { ...sectionsOf(ok.doc), ...sections }
    } else unconfigured.push(name)
  }
  return { config: validateConfig(doc(chain, sections)), unconfigured }
}

// Decided before the tests are declared: which owners this run can check.
const probe = allFiltersConfig('http://127.0.0.1:9', 'redis://127.0.0.1:9')
if (probe.unconfigured.length) console.warn(`registered filters with no valid settings in config/examples or deploy/k8s (their metrics wait): ${probe.unconfigured.join(', ')}`)
const ownerChecked = (owner: string) => ownerPresent(owner) && !(owner.startsWith('filter:') && probe.unconfigured.includes(owner.slice(7)))

/** Metric families (from # HELP) and each series' label text, from Prometheus exposition. */
function exposition(text: string): { families: Set<string>; samples: Map<string, string[]> } {
  const families = new Set<string>()
  const samples = new Map<string, string[]>()
  for (const line of text.split('\n')) {
    const help = /^# HELP (\S+)/.exec(line)
    if (help) families.add(help[1]!)
    // Label values may hold braces (route="/v1/tenants/{id}"): the label set ends at the last "}".
    const sample = /^([a-zA-Z_:][\w:]*)(\{.*\})?\s\S+$/.exec(line)
    if (sample) {
      const list = samples.get(sample[1]!) ?? []
      list.push(sample[2] ?? '')
      samples.set(sample[1]!, list)
    }
  }
  return { families, samples }
}

/**
 * A real control plane, with traffic that touches each of its metrics: admin requests, a
 * committed change pushed to a connected proxy stream and answered ACK then NACK, plugin
 * uploads accepted and refused. Returns its /metrics text.
 */
async function controlPlaneTraffic(cp: TestControlPlane, signer: ReturnType<typeof makePublisher>): Promise<string> {
  const proxyToken = await cp.token({ sub: 'edge-1', roles: ['proxy'] })
  const abort = new AbortController()
  const stream = await fetch(`${cp.url}/v1/stream?proxy=edge-1&version=0`, { headers: { authorization: `Bearer ${proxyToken}` }, signal: abort.signal })
  const reader = stream.body!.getReader()
  let seen = ''
  const waitFor = async (id: string) => {
    while (!seen.includes(`id: ${id}\n`)) {
      const { value, done } = await reader.read()
      if (done) throw new Error(`the config stream ended before version ${id}:\n${seen}`)
      seen += Buffer.from(value).toString()
    }
  }
  await waitFor('1')
  const ack = (version: number, status: string) => cp.api('/v1/proxies/edge-1/ack', { method: 'POST', token: proxyToken, body: JSON.stringify({ version, status, error: 'contract test' }) })
  await ack(1, 'ACK')
  await cp.api('/v1/tenants/contract', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
  await waitFor('2')
  await ack(2, 'NACK')
  const artifact = Buffer.from('contract plugin')
  await cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(signedPackage(signer, { name: 'contract', version: '1.0.0', artifact })) })
  await cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify({ ...signedPackage(signer, { name: 'contract', version: '1.0.1', artifact }), signature: null }) })
  await cp.api('/v1/plugins')
  const text = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
  abort.abort()
  return text
}

describe('metric names used by rules and dashboards', () => {
  it('are all in the contract (deploy/observability/metrics.yaml) or recorded by alerts.yaml', () => {
    const unknown = uses.filter((u) => !(u.metric.includes(':') ? recorded.has(u.metric) : familyOf(u.metric, contract))).map((u) => `${u.where}: ${u.metric}`)
    expect(uses.length).toBeGreaterThan(50)
    expect(unknown).toEqual([])
  })

  it('use only labels the contract gives that metric', () => {
    const wrong: string[] = []
    for (const u of uses) {
      const family = familyOf(u.metric, contract)
      if (!family) continue
      const allowed = new Set([...contract[family]!.labels, ...(contract[family]!.type === 'histogram' ? ['le'] : []), 'instance', 'job'])
      for (const m of u.matchers) if (!allowed.has(m.label)) wrong.push(`${u.where}: ${u.metric}{${m.label}}`)
    }
    expect(wrong).toEqual([])
  })
})

describe('a running proxy with every registered filter, and a running control plane, export them', () => {
  let backend: DemoBackend
  let redis: TestRedis
  let proxy: TestProxy
  let cp: TestControlPlane
  let text = ''
  let families = new Set<string>()
  let samples = new Map<string, string[]>()
  let cpExposition: ReturnType<typeof exposition> = { families: new Set(), samples: new Map() }

  beforeAll(async () => {
    backend = await startDemoBackend()
    redis = await startRedis()
    proxy = await startTestProxy(allFiltersConfig(backend.url, redis.url).config)
    // Traffic that touches each path: a query (twice, so a cache can hit), a mutation, a
    // malformed body, a request for a tenant nobody knows. What the proxy answers is not this
    // test's business (other tests own it), but a request that fails outright is reported.
    const failed: string[] = []
    const post = async (body: string, headers: Record<string, string> = {}) => {
      try {
        const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'demo', ...headers }, body })
        await r.body.dump()
      } catch (err) {
        failed.push(`${body.slice(0, 60)}: ${(err as Error).message}`)
      }
    }
    for (let i = 0; i < 2; i++) await post(JSON.stringify({ query: '{ entities(first: 2) { id } }' }))
    await post(JSON.stringify({ query: 'mutation { updateEntity(id: "1", name: "x") { id } }' }))
    await post('{not json')
    await post(JSON.stringify({ query: '{ hello }' }), { 'x-tenant-id': 'nobody-knows-me' })
    if (failed.length) console.warn(`requests through the all-filters chain failed (chain: ${proxy.config().routes[0]!.filters.map((f) => f.name).join(' → ')}):\n  ${failed.join('\n  ')}`)
    text = await proxy.metricsText()
    ;({ families, samples } = exposition(text))

    const signer = makePublisher('contract')
    cp = await startTestControlPlane({ dir: mkdtempSync(join(scratch, 'cp-')), pluginTrust: loadPluginTrust(writeTrustFile(join(scratch, 'plugin-trust.json'), [signer])) })
    cpExposition = exposition(await controlPlaneTraffic(cp, signer))
  })
  afterAll(async () => {
    await cp?.close()
    await proxy?.close()
    await redis?.close()
    await backend?.close()
  })

  const used = new Set(uses.map((u) => familyOf(u.metric, contract)).filter((f): f is string => f !== undefined))
  const byOwner = new Map<string, string[]>()
  for (const [name, c] of Object.entries(contract)) byOwner.set(c.owner, [...(byOwner.get(c.owner) ?? []), name])

  const proxyFamilies = () => families
  const proxySamples = () => samples

  it('every contract metric is read by a rule or a panel (no dead entries)', () => {
    expect(Object.keys(contract).filter((m) => !used.has(m))).toEqual([])
  })

  for (const [owner, names] of byOwner) {
    if (!ownerChecked(owner)) {
      const why = !ownerPresent(owner) ? 'not in filters/registry.ts yet' : 'registered, but no config example configures it'
      it.skip(`waiting for ${owner} (${why}): ${names.join(', ')}`, () => undefined)
      continue
    }
    it(`${owner}: ${names.join(', ')}`, () => {
      // The control plane's families come from its own /metrics, everything else from the proxy's.
      const { families, samples } = owner === 'control-plane' ? cpExposition : { families: proxyFamilies(), samples: proxySamples() }
      const missing = names.filter((n) => !families.has(n))
      expect(missing, `exported families:\n${[...families].sort().join('\n')}`).toEqual([])
      for (const n of names) {
        const c = contract[n]!
        const series = c.type === 'histogram' ? (samples.get(`${n}_bucket`) ?? []) : (samples.get(n) ?? [])
        // Labels and buckets can only be seen once a series exists; prom-client prints HELP
        // for every registered family, samples only for label sets that were observed.
        if (series.length === 0) continue
        for (const label of c.labels) expect(series.some((s) => s.includes(`${label}="`)), `${n} has label ${label}`).toBe(true)
        for (const le of c.buckets ?? []) expect(series.some((s) => s.includes(`le="${le}"`)), `${n} has bucket le=${le}`).toBe(true)
      }
    })
  }

  it('the core request histogram has the 0.25 s bucket the latency SLO counts against', () => {
    expect(samples.get('igw_request_duration_seconds_bucket')?.some((s) => s.includes('le="0.25"'))).toBe(true)
    expect(samples.get('igw_requests_total')?.some((s) => s.includes('route="graphql"') && s.includes('status="200"'))).toBe(true)
  })

  it('the control plane exports every plugin refusal reason the alert reads, from the start, and counts what happened', () => {
    const rejections = cpExposition.samples.get('igw_plugin_upload_rejections_total') ?? []
    for (const reason of ['unsigned', 'bad_signature', 'untrusted_publisher', 'malformed']) expect(rejections.some((s) => s.includes(`reason="${reason}"`)), reason).toBe(true)
    const acks = cpExposition.samples.get('igw_control_plane_acks_total') ?? []
    expect(acks.some((s) => s.includes('result="ack"')) && acks.some((s) => s.includes('result="nack"'))).toBe(true)
    expect(cpExposition.samples.get('igw_control_plane_requests_total')?.some((s) => s.includes('route="/v1/plugins"') && s.includes('status="201"'))).toBe(true)
    expect(cpExposition.samples.get('igw_control_plane_request_duration_seconds_bucket')?.some((s) => s.includes('le="0.25"'))).toBe(true)
  })
})
