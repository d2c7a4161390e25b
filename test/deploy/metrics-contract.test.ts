// Every metric the rules and dashboards read is a metric igw really exports. A real proxy starts
// with every filter registered in filters/registry.ts (their settings taken from the config
// examples and the deploy config documents), against the real demo backend and a real Redis;
// some traffic goes through; /metrics is scraped. Metrics whose owner (a filter, the control
// plane) is not there yet are listed as waiting (skipped), never silently passed.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { filterModules } from '../../filters/registry.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { ROOT, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { dashboardExprs, familyOf, metricContract, ruleExprs, selectors } from './promql.ts'

const contract = metricContract(ROOT)
const registered = new Set(Object.keys(filterModules))
const ownerPresent = (owner: string) => owner === 'core' || (owner.startsWith('filter:') && registered.has(owner.slice(7)))
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
const ownerChecked = (owner: string) => ownerPresent(owner) && !probe.unconfigured.includes(owner.slice(7))

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

describe('a running proxy with every registered filter exports them', () => {
  let backend: DemoBackend
  let redis: TestRedis
  let proxy: TestProxy
  let text = ''
  const families = new Set<string>()
  const samples = new Map<string, string[]>()

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
    for (const line of text.split('\n')) {
      const help = /^# HELP (\S+)/.exec(line)
      if (help) families.add(help[1]!)
      const sample = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s/.exec(line)
      if (sample) {
        const list = samples.get(sample[1]!) ?? []
        list.push(sample[2] ?? '')
        samples.set(sample[1]!, list)
      }
    }
  })
  afterAll(async () => {
    await proxy?.close()
    await redis?.close()
    await backend?.close()
  })

  const used = new Set(uses.map((u) => familyOf(u.metric, contract)).filter((f): f is string => f !== undefined))
  const byOwner = new Map<string, string[]>()
  for (const [name, c] of Object.entries(contract)) byOwner.set(c.owner, [...(byOwner.get(c.owner) ?? []), name])

  it('every contract metric is read by a rule or a panel (no dead entries)', () => {
    expect(Object.keys(contract).filter((m) => !used.has(m))).toEqual([])
  })

  for (const [owner, names] of byOwner) {
    if (!ownerChecked(owner)) {
      const why = !ownerPresent(owner) ? (owner === 'control-plane' ? 'not started by this test yet' : 'not in filters/registry.ts yet') : 'registered, but no config example configures it'
      it.skip(`waiting for ${owner} (${why}): ${names.join(', ')}`, () => undefined)
      continue
    }
    it(`${owner}: ${names.join(', ')}`, () => {
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
})
