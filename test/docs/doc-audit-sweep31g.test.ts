// Sweep 31g, the docs read as a new user reads them, against the product:
// - a backticked config path (`routes[0].filters[1].ttl` in docs/control-plane.md's audit diff
//   example) must name a key the schema takes, and every key the schema takes must be named
//   somewhere (subscriptions.upstream.forwardInitPayload was named nowhere);
// - docs/deploy.md's worker-heap formula subtracted 6 MB, the young generation's old size, while
//   the proxy subtracts what V8 reserves for workerHeap.youngGenerationMb (24 MB by default);
// - docs/quota.md's RateLimit example advertised a "budget" policy for a tenant whose budget, in
//   the reference just above it, had no hardCap, which the proxy never advertises.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { filterConfigs } from '../../config/filters/index.ts'
import { gatewayConfigObject } from '../../config/schema.ts'
import { defaultWorkerOldGenerationMb, effectiveYoungGenerationMb } from '../../proxy/supervisor.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { ROOT, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Schema = { _zod: { def: Record<string, any> } }

function unwrap(s: Schema): Schema {
  for (;;) {
    const d = s._zod.def
    if (['optional', 'default', 'prefault', 'nullable', 'readonly', 'catch'].includes(d.type)) s = d.innerType
    else if (d.type === 'pipe') s = d.in
    else return s
  }
}

/** Every key path the schema takes (records as `*`, arrays transparent, union members merged). */
function keyPaths(s: Schema, path: string[], out: string[][]): string[][] {
  const d = unwrap(s)._zod.def
  if (path.length > 0) out.push(path)
  if (d.type === 'object') for (const [k, v] of Object.entries(d.shape)) keyPaths(v as Schema, [...path, k], out)
  else if (d.type === 'record') keyPaths(d.valueType, [...path, '*'], out)
  else if (d.type === 'array') keyPaths(d.element, path, out)
  else if (d.type === 'union') for (const o of d.options) keyPaths(o, path, out)
  return out
}

const top = keyPaths(gatewayConfigObject as unknown as Schema, [], [])
const inFilters = (filterConfigs as unknown as Schema[]).flatMap((f) => keyPaths(f, [], []))
const schemaPaths = [...top, ...inFilters]
const topKeys = new Set(top.filter((p) => p.length === 1).map((p) => p[0]!))

/**
 * A documented path names schema keys from the top of the document (`tenants.<id>.tier`), from
 * the top of a section (docs/quota.md's `redis.budgetMs` is `quotas.redis.budgetMs`) or of a
 * filter entry (`redis.l2` of `cache`, `routes[].filters[cache].ttlSeconds`).
 */
function named(doc: string): boolean {
  const segs = doc.replace(/\[[^\]]*\]/g, '').replace(/<[^>]+>/g, '*').split('.').filter(Boolean)
  const at = (p: string[], i: number) => segs.length + i <= p.length && segs.every((x, j) => x === '*' || p[i + j] === x || p[i + j] === '*')
  if (segs[0] === 'routes' && segs[1] === 'filters' && segs.length > 2) return named(segs.slice(2).join('.'))
  // A section starts at a named key, not at a record's entry (`upstreams.<name>`).
  return top.some((p) => at(p, 0) || (p[1] !== '*' && at(p, 1))) || inFilters.some((p) => at(p, 0))
}

const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))]
const texts = files.map((f) => [f, readFileSync(join(ROOT, f), 'utf8')] as const)
// Dotted names under a config section's name that are not config paths: policy attributes, audit
// actions, /readyz fields and the seed's key.
const NOT_CONFIG = new Set(['admin.read', 'admin.write', 'admin.write.denied', 'dlp.review', 'dlp.detokenize', 'dlp.detokenize.denied', 'dlp.preset.set', 'workers.notListening', 'workers.staleConfig', 'cache.hotpath.ttlSeconds'])

describe('config paths in the docs', () => {
  it('each backticked path under a top-level section names a key the schema takes', () => {
    const wrong: string[] = []
    let checked = 0
    for (const [file, text] of texts) {
      for (const m of text.matchAll(/`([a-zA-Z]\w*(?:\[[^\]`]*\])?(?:\.[\w<>*]+(?:\[[^\]`]*\])?)+)`/g)) {
        const path = m[1]!
        if (!topKeys.has(path.replace(/[[.].*$/, '')) || NOT_CONFIG.has(path) || /\.(ya?ml|json|md|ts)$/.test(path)) continue
        checked++
        if (!named(path)) wrong.push(`${file}: ${path}`)
      }
    }
    expect(checked).toBeGreaterThan(100)
    expect(wrong).toEqual([])
  })

  it('every key the schema takes is named in README.md or docs/', () => {
    const all = texts.map(([, t]) => t).join('\n')
    const missing = [...new Set(schemaPaths.map((p) => p.filter((s) => s !== '*').at(-1)!))].filter(
      (key) => !new RegExp(`(\`[^\`\\n]*\\b${key}\\b[^\`\\n]*\`|^\\s*-?\\s*${key}:|[{,]\\s*${key}:)`, 'm').test(all),
    )
    expect(missing).toEqual([])
  })
})

describe('docs/deploy.md worker heaps', () => {
  const text = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8')
  const youngDefault = (gatewayConfigObject.parse({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }] }) as { workerHeap: { youngGenerationMb: number } }).workerHeap.youngGenerationMb

  it('subtracts what V8 reserves for the default young generation', () => {
    const m = /`floor\(limit × 0\.75 \/ \(workers \+ 1\)\) − (\d+)` MB/.exec(text)
    expect(m, 'the formula is in docs/deploy.md').not.toBeNull()
    expect(Number(m![1])).toBe(effectiveYoungGenerationMb(youngDefault))
  })

  it('gives the figures the proxy computes for the manifests', () => {
    const m = /ingress \(`1Gi`, `IGW_WORKERS=2`\) gives each worker (\d+) MB, the sidecar \(`256Mi`, one worker\) (\d+) MB/.exec(text)
    expect(m).not.toBeNull()
    expect(Number(m![1])).toBe(defaultWorkerOldGenerationMb(1024 * 1024 * 1024, 2, youngDefault))
    expect(Number(m![2])).toBe(defaultWorkerOldGenerationMb(256 * 1024 * 1024, 1, youngDefault))
  })
})

describe('docs/quota.md: the RateLimit example is what the reference config advertises', () => {
  const text = readFileSync(join(ROOT, 'docs/quota.md'), 'utf8')
  const reference = /## Configuration reference[\s\S]*?```yaml\n([\s\S]*?)```/.exec(text)![1]!
  const example = /^RateLimit-Policy: (.*)$/m.exec(text)![1]!
  let backend: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end('{"data":{"hello":"x"}}')
    })
    const { quotas } = parse(reference) as { quotas: Record<string, unknown> }
    // Nothing written to /var/lib or sent to example.com from a test.
    delete quotas.stateFile
    delete quotas.events
    proxy = await startTestProxy({
      tenants: { acme: { tier: 'silver' }, initech: { tier: 'bronze' } },
      quotas: quotas as never,
      routes: [{ name: 'gql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
    })
  })

  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('names the policies acme gets', async () => {
    const res = await fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ hello }"}' })
    await res.text()
    expect(res.status).toBe(200)
    expect(res.headers.get('ratelimit-policy')).toBe(example)
  })
})
