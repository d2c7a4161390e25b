// Sweep 18 of the DLP filter and its policy engine:
// - an export policy calling a builtin the wasm runtime lacks (http.send) loaded fine and then
//   denied every export that reached the call: now the config (and a reload) is refused, naming
//   the builtin, the bundle and its .rego file; time.now_ns, which igw provides, works;
// - a runaway policy evaluation (a huge comprehension) held the worker for seconds and grew the
//   wasm memory without bound: now capped (memory) and budgeted (time), denied, logged, counted;
// - masks dropped the blanks around a field's value (" 123-45-6789 " → "***-**-6789").
// Real opa CLI builds the bundles, real opa-wasm evaluates them, real proxy and backend.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { bundlePath } from '../../../policies/catalog.ts'
import { loadPolicyBundle, PolicyEvaluationError } from '../../../policies/engine.ts'
import { opaBinary } from '../../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-sweep18-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Build Rego files into a wasm bundle with the real opa CLI (no capabilities restriction, as an operator might). */
function build(name: string, files: Record<string, string>): string {
  const src = join(dir, name)
  mkdirSync(src, { recursive: true })
  for (const [f, rego] of Object.entries(files)) writeFileSync(join(src, f), rego)
  const out = join(dir, `${name}.tar.gz`)
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/dlp/decision', '-o', out, src], { encoding: 'utf8', cwd: dir })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

const HTTP_SEND = `package intelgraph.dlp

decision := {"allow": r.status_code == 200, "reason": "remote"} if {
	input.tenant == "globex"
	r := http.send({"method": "GET", "url": "http://127.0.0.1:9/"})
}

decision := {"allow": true, "reason": "allowed"} if input.tenant != "globex"
`

// time.now_ns is provided (the evaluation's start, one value per evaluation, as OPA has it).
const NOW_NS = `package intelgraph.dlp

default ok := false

ok if {
	t := time.now_ns()
	t == time.now_ns()
	t > 1700000000000000000
	t < 4000000000000000000
}

decision := {"allow": ok, "reason": "timed"}
`

// A comprehension over 100 000 formatted strings for tenant "globex": ~6 s and 250 MiB of wasm
// memory per evaluation before the cap (and then allowed); other tenants decide at once.
const RUNAWAY = `package intelgraph.dlp

decision := {"allow": count(s) > 0, "reason": "big"} if {
	input.tenant == "globex"
	s := {x | some i in numbers.range(1, 100000); x := sprintf("%d-%d", [i, i])}
}

decision := {"allow": true, "reason": "allowed"} if input.tenant != "globex"
`

// CPU without much memory: n² comparisons collecting n items.
const QUADRATIC = `package intelgraph.dlp

decision := {"allow": count(hits) > 0, "reason": "quadratic"} if {
	hits := [i | some i in numbers.range(1, input.n); some j in numbers.range(1, input.n); i == j]
}
`

function rawExportBackend(): Promise<RawBackend> {
  return startRawBackend((_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"items":[{"id":1,"note":"nothing sensitive"}]}')
  })
}

function docFor(upstream: string, bundle: string, keyring: string) {
  return {
    mode: 'ingress' as const,
    tenants: { acme: {}, globex: {} },
    dlp: { keyring: { file: keyring }, policy: { bundle } },
    routes: [{ name: 'raw', upstream, type: 'http' as const, filters: [{ name: 'tenant' as const }, { name: 'dlp' as const, preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
  }
}

describe('an export policy calling a builtin the wasm runtime does not implement', () => {
  it('loadPolicyBundle with checkBuiltins refuses it, naming the builtin, the bundle and the .rego file that calls it', async () => {
    const bundle = build('http-send', { 'remote.rego': HTTP_SEND })
    const err = await loadPolicyBundle(bundle, undefined, { checkBuiltins: true }).then(
      () => undefined,
      (e: unknown) => e as Error,
    )
    expect(err).toBeInstanceOf(Error)
    expect(err!.message).toContain(bundle)
    expect(err!.message).toMatch(/\(policy file [^)]*remote\.rego\): the policy calls builtin the wasm runtime does not implement: http\.send\./)
  })

  it('builtins the SDK implements in JavaScript (sprintf, regex.split) and time.now_ns (igw) load and evaluate', async () => {
    const bundle = build('js-builtins', {
      'p.rego': `package intelgraph.dlp

decision := {"allow": count(regex.split(",", "a,b")) == 2, "reason": sprintf("%s at %d", ["ok", time.now_ns()])}
`,
    })
    const policy = await loadPolicyBundle(bundle, undefined, { checkBuiltins: true })
    const d = policy.evaluate<{ allow: boolean; reason: string }>({})
    expect(d?.allow).toBe(true)
    expect(d?.reason).toMatch(/^ok at \d{19}$/)
  })

  describe('through the real proxy', () => {
    let raw: RawBackend
    let proxy: TestProxy | undefined
    const keyring = join(dir, 'keys', 'ring.json')
    beforeAll(async () => {
      raw = await rawExportBackend()
    })
    afterAll(async () => {
      await proxy?.close()
      await raw?.close()
    })

    it('the proxy does not start with it, and a reload naming it is refused while the running policy serves on', async () => {
      const bad = build('http-send-proxy', { 'export.rego': HTTP_SEND })
      // Before: it started, and every export of globex was denied with "not implemented".
      await expect(startTestProxy(docFor(raw.url, bad, keyring))).rejects.toThrow(/http\.send/)
      proxy = await startTestProxy(docFor(raw.url, bundlePath('dlp'), keyring))
      const exportAs = async (tenant: string) => {
        const r = await request(`${proxy!.url}/export/items.json`, { headers: { 'x-tenant-id': tenant } })
        await r.body.text()
        return r.statusCode
      }
      expect(await exportAs('globex')).toBe(200)
      const r = await proxy.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...docFor(raw.url, bad, keyring) }))
      expect(r.ok).toBe(false)
      expect(r.error).toContain(bad)
      expect(r.error).toMatch(/\(policy file [^)]*export\.rego\): .*does not implement: http\.send/)
      expect(await exportAs('globex')).toBe(200)
      expect(await exportAs('acme')).toBe(200)
    })

    it('a policy using time.now_ns decides (it was denied on every export: "not implemented")', async () => {
      const timed = build('now-ns', { 'export.rego': NOW_NS })
      const r = await proxy!.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...docFor(raw.url, timed, keyring) }))
      expect(r).toMatchObject({ ok: true })
      const res = await request(`${proxy!.url}/export/items.json`, { headers: { 'x-tenant-id': 'acme' } })
      expect(res.statusCode).toBe(200)
      expect(await res.body.text()).toContain('nothing sensitive')
      expect(proxy!.logs.find('DLP policy evaluation failed')).toHaveLength(0)
    })
  })
})

describe('a runaway export policy evaluation', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await rawExportBackend()
    proxy = await startTestProxy(docFor(raw.url, build('runaway', { 'export.rego': RUNAWAY }), join(dir, 'keys', 'ring2.json')))
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('is stopped by the memory cap: denied, logged with its duration, counted; other tenants export', async () => {
    const res = await request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': 'globex' } })
    // Before: ~6 s of a blocked worker, 250 MiB of wasm memory kept, and then 200.
    expect(res.statusCode).toBe(403)
    const body = (await res.body.json()) as { errors: { extensions: { code: string } }[] }
    expect(body.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
    await expect.poll(() => proxy.logs.find('DLP policy evaluation failed').length, { timeout: 10_000 }).toBe(1)
    const line = proxy.logs.find('DLP policy evaluation failed')[0] as { err: { message: string }; durationMs?: number }
    expect(line.err.message).toMatch(/opa_malloc: failed \(the evaluation needed more than its memory cap of \d+ MiB\)/)
    expect(typeof line.durationMs).toBe('number')
    await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_dlp_policy_failures_total', 'cause="runaway"'), { timeout: 10_000 }).toBe(1)
    const ok = await request(`${proxy.url}/export/items.json`, { headers: { 'x-tenant-id': 'acme' } })
    expect(ok.statusCode).toBe(200)
    expect(await ok.body.text()).toContain('nothing sensitive')
  }, 120_000)

  it('an evaluation over the time budget fails with runawayMs set, and the policy works on', async () => {
    const policy = await loadPolicyBundle(build('quadratic', { 'p.rego': QUADRATIC }), undefined, { budgetMs: 1 })
    let err: unknown
    try {
      policy.evaluate({ n: 300 }) // 90 000 comparisons: tens of ms
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(PolicyEvaluationError)
    expect((err as PolicyEvaluationError).runawayMs).toBeGreaterThan(1)
    expect((err as Error).message).toMatch(/evaluation took \d+ ms, over its budget of 1 ms/)
    // Without a budget the same evaluation decides.
    const unbudgeted = await loadPolicyBundle(build('quadratic2', { 'p.rego': QUADRATIC }))
    expect(unbudgeted.evaluate({ n: 300 })).toEqual({ allow: true, reason: 'quadratic' })
  })
})

describe('masks keep the text around a value', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      if (req.url!.endsWith('.csv')) {
        res.writeHead(200, { 'content-type': 'text/csv' })
        res.end('id,ssn,ip,phone,card\n1, 123-45-6789 ,203.0.113.9 , +1 415 555 0123 , 4111 1111 1111 1111 \n')
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ssn: ' 123-45-6789 ', socialSecurityNumber: '\t123456789\n', ip: ' 203.0.113.9 ', ipv6: ' 2001:db8::1 ', phone: ' 415-555-0143 ', note: 'ssn 123-45-6789 end, from 203.0.113.9 end' }))
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: {
        keyring: { file: join(dir, 'keys', 'ring3.json') },
        presets: { mask_all: { ssn_us: 'mask', ipv4: 'mask', ipv6: 'mask', phone_e164: 'mask', credit_card: 'mask', email: 'mask' } },
        policy: { enabled: false },
      },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_all', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('a JSON field value keeps its blanks (before: " 123-45-6789 " became "***-**-6789", " 203.0.113.9 " became " 203.0.*.*")', async () => {
    const res = await request(`${proxy.url}/export/a.json`)
    expect(res.statusCode).toBe(200)
    expect(await res.body.json()).toEqual({
      ssn: ' ***-**-6789 ',
      socialSecurityNumber: '\t***-**-6789\n',
      ip: ' 203.0.*.* ',
      ipv6: ' 2001:db8:* ',
      phone: ' +1*******0143 ',
      note: 'ssn ***-**-6789 end, from 203.0.*.* end',
    })
  })

  it('a CSV cell keeps its blanks, so the columns stay as they were', async () => {
    const res = await request(`${proxy.url}/export/a.csv`)
    expect(res.statusCode).toBe(200)
    expect(await res.body.text()).toBe('id,ssn,ip,phone,card\n1, ***-**-6789 ,203.0.*.* , +1*******0123 , **** **** **** 1111 \n')
  })
})
