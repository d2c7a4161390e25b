// DLP sweep 25b: an export policy that failed (a rule conflict) or ran over its budget was
// refused with "export policy … gave no decision", in the 403 and in the audit line, the same
// words as a policy with no rule for the case: nothing but the log and the metric told an
// operator (or a client) that the policy broke. Now the failure has its own reason, and a
// missing decision keeps its own. Real opa CLI builds the bundle, real opa-wasm evaluates it,
// real proxy and backend on loopback.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { opaBinary } from '../../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-fail-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

// acme: allowed at once; globex: two rules give different decisions (a conflict, an evaluation
// error); initech: n² comparisons, far over a 50 ms budget (the others take microseconds, whatever the load); umbrella: no rule applies.
const POLICY = `package intelgraph.dlp

decision := {"allow": true, "reason": "allowed"} if input.tenant == "acme"

decision := {"allow": true, "reason": "one"} if input.tenant == "globex"

decision := {"allow": false, "reason": "two"} if input.tenant == "globex"

decision := {"allow": count(hits) > 0, "reason": "slow"} if {
	input.tenant == "initech"
	hits := [i | some i in numbers.range(1, 1500); some j in numbers.range(1, 1500); i == j]
}
`

function build(): string {
  const src = join(dir, 'p')
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'p.rego'), POLICY)
  const out = join(dir, 'p.tar.gz')
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/dlp/decision', '-o', out, src], { encoding: 'utf8', cwd: dir })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

describe('a failing export policy has its own reason (sweep 25b)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"items":[{"id":1,"note":"nothing sensitive"}]}')
    })
    proxy = await startTestProxy({
      workers: 1,
      tenants: { acme: {}, globex: {}, initech: {}, umbrella: {} },
      dlp: { keyring: { file: join(dir, 'ring.json') }, policy: { bundle: build(), budgetMs: 50 } },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  }, 60_000)
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const exportAs = async (tenant: string) => {
    const r = await request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': tenant } })
    const text = await r.body.text()
    const message = r.statusCode === 403 ? (JSON.parse(text) as { errors: { message: string }[] }).errors[0]!.message : undefined
    return { status: r.statusCode, message }
  }
  const auditReason = async (tenant: string) => {
    await expect.poll(() => proxy.logs.find('dlp export').filter((l) => l.tenant === tenant).length, { timeout: 5_000 }).toBeGreaterThan(0)
    const line = proxy.logs.find('dlp export').find((l) => l.tenant === tenant) as { outcome: string; policy: { reason: string } }
    expect(line.outcome).toBe('denied')
    return line.policy.reason
  }

  it('a conflict: denied as an evaluation error, in the 403 and the audit line', async () => {
    expect(await exportAs('acme')).toEqual({ status: 200, message: undefined })
    const r = await exportAs('globex')
    expect(r).toEqual({ status: 403, message: 'export policy intelgraph/dlp/decision failed: evaluation error' })
    expect(await auditReason('globex')).toBe(r.message)
    expect(metricSum(await proxy.metricsText(), 'igw_dlp_policy_failures_total', 'cause="error"')).toBe(1)
  })

  it('over its budget: denied as a runaway', async () => {
    const r = await exportAs('initech')
    expect(r).toEqual({ status: 403, message: 'export policy intelgraph/dlp/decision failed: over its time or memory budget' })
    expect(await auditReason('initech')).toBe(r.message)
    expect(metricSum(await proxy.metricsText(), 'igw_dlp_policy_failures_total', 'cause="runaway"')).toBe(1)
  })

  it('no rule for the case still says the policy gave no decision', async () => {
    const failures = metricSum(await proxy.metricsText(), 'igw_dlp_policy_failures_total', '')
    const r = await exportAs('umbrella')
    expect(r).toEqual({ status: 403, message: 'export policy intelgraph/dlp/decision gave no decision' })
    expect(await auditReason('umbrella')).toBe(r.message)
    expect(metricSum(await proxy.metricsText(), 'igw_dlp_policy_failures_total', '')).toBe(failures)
  })
})
