// `dlp.policy.budgetMs`: the time an export policy evaluation may take was fixed at 250 ms. An
// operator whose policy legitimately takes longer (a large data document) had every export
// denied as a runaway, and one who wants a tighter bound could not set it. Now configurable
// (1–60000, default 250), and a reload that changes only the budget takes effect (the loaded
// policy is cached by bundle, entrypoint and data: the budget is part of that key).
// Real opa CLI builds the bundle, real opa-wasm evaluates it, real proxy and backend.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../../config/load.ts'
import { opaBinary } from '../../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-budget-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

// n² comparisons for tenant globex (~25–80 ms of wasm here: well over the 10 ms budget below,
// well under the 250 ms default); acme decides at once. A 1 ms budget was tight enough that on a
// loaded CI box acme's instant decision overran it too (403, a second runaway counted).
const SLOW = `package intelgraph.dlp

decision := {"allow": count(hits) > 0, "reason": "slow"} if {
	input.tenant == "globex"
	hits := [i | some i in numbers.range(1, 400); some j in numbers.range(1, 400); i == j]
}

decision := {"allow": true, "reason": "allowed"} if input.tenant != "globex"
`

function build(): string {
  const src = join(dir, 'slow')
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'p.rego'), SLOW)
  const out = join(dir, 'slow.tar.gz')
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/dlp/decision', '-o', out, src], { encoding: 'utf8', cwd: dir })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

describe('dlp.policy.budgetMs', () => {
  let raw: RawBackend
  let proxy: TestProxy
  let budgetMs = 10
  let bundle: string
  const doc = () => ({
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    workers: 1,
    mode: 'ingress' as const,
    tenants: { acme: {}, globex: {} },
    dlp: { keyring: { file: join(dir, 'ring.json') }, policy: { bundle, budgetMs } },
    routes: [{ name: 'raw', upstream: raw.url, type: 'http' as const, filters: [{ name: 'tenant' as const }, { name: 'dlp' as const, preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
  })
  beforeAll(async () => {
    bundle = build()
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"items":[{"id":1,"note":"nothing sensitive"}]}')
    })
    proxy = await startTestProxy(doc(), { loadConfig: () => validateConfig(doc()) })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const exportAs = async (tenant: string) => {
    const r = await request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': tenant } })
    return { status: r.statusCode, text: await r.body.text() }
  }

  it('budgetMs: 10 denies the slow evaluation as a runaway, naming the budget; other tenants export', async () => {
    const slow = await exportAs('globex')
    expect(slow.status).toBe(403)
    expect(slow.text).toContain('DLP_BLOCKED')
    await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_dlp_policy_failures_total', 'cause="runaway"'), { timeout: 10_000 }).toBe(1)
    await expect.poll(() => proxy.logs.find('DLP policy evaluation failed').length, { timeout: 10_000 }).toBeGreaterThan(0)
    const line = proxy.logs.find('DLP policy evaluation failed')[0] as { err: { message: string } }
    expect(line.err.message).toMatch(/over its budget of 10 ms/)
    expect((await exportAs('acme')).status).toBe(200)
  }, 60_000)

  // The reload goes to a budget far above the slow evaluation rather than back to the 250 ms
  // default: on a loaded CI box the same evaluation once took over 250 ms of wall time twice in a
  // row. The default itself is checked at the config level below.
  it('a reload that changes only the budget lets the same evaluation finish', async () => {
    budgetMs = 10_000
    expect((await proxy.reload()).ok).toBe(true)
    const slow = await exportAs('globex')
    expect(slow.status).toBe(200)
    expect(slow.text).toContain('nothing sensitive')
  }, 60_000)

  it('defaults to 250 ms', () => {
    expect(validateConfig({ ...doc(), dlp: { policy: {} } }).dlp.policy.budgetMs).toBe(250)
  })

  it('is validated with the path named', () => {
    for (const bad of [0, 60_001, 2.5]) {
      let err: unknown
      try {
        validateConfig({ dlp: { policy: { budgetMs: bad } }, routes: [] })
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(ConfigError)
      expect((err as Error).message).toContain('dlp.policy.budgetMs')
    }
  })
})
