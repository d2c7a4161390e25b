// Every `igw_<metric>{labels}` the README and docs/*.md write must carry the labels a running
// proxy exports for it: docs/operate.md listed igw_requests_total{route,status} and
// igw_request_duration_seconds{route}, and a query or recording rule written from it
// (`sum by (route, status)` joined on those labels alone) silently merged tiers and operations.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { ROOT, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: DemoBackend
let proxy: TestProxy
let scraped: Map<string, string>

/** Label names of each family in Prometheus text (histograms by their _count series). */
function labelSets(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of text.split('\n')) {
    const m = /^(igw_[a-z0-9_]+?)(_count|_bucket|_sum)?\{([^}]*)\}/.exec(line)
    if (m === null || m[2] === '_bucket' || m[2] === '_sum') continue
    const names = [...m[3]!.matchAll(/([a-z_]+)="/g)].map((l) => l[1]!).sort().join(',')
    out.set(m[1]!, names)
  }
  return out
}

beforeAll(async () => {
  backend = await startDemoBackend({ host: '127.0.0.1', port: 0 })
  proxy = await startTestProxy({
    tenants: { acme: { tier: 'gold' } },
    quotas: { defaults: { graphql: { rate: 100, burst: 100 } } },
    routes: [{ name: 'gql', upstream: backend.url, filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'acme' }, { name: 'quota', kind: 'graphql' }, { name: 'cache' }] }],
  })
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
    expect(res.status).toBe(200)
    await res.text()
  }
  scraped = labelSets(await (await fetch(`${proxy.adminUrl}/metrics`)).text())
})

afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('documented metric labels', () => {
  it('match the labels the proxy exports', () => {
    const docs = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))]
    const wrong: string[] = []
    let checked = 0
    for (const file of docs) {
      const text = readFileSync(join(ROOT, file), 'utf8')
      for (const m of text.matchAll(/\b(igw_[a-z0-9_]+)\{([a-z_]+(?:="[^"]*")?(?:, ?[a-z_]+(?:="[^"]*")?)*)\}/g)) {
        const exported = scraped.get(m[1]!)
        if (exported === undefined) continue // not exported by this proxy's filters: another test's business
        checked++
        const documented = m[2]!.split(',').map((l) => l.trim().split('=')[0]!).sort().join(',')
        if (documented !== exported) wrong.push(`${file}: ${m[0]} (exported: {${exported}})`)
      }
    }
    expect(checked).toBeGreaterThan(10)
    expect(wrong).toEqual([])
  })
})
