// The policy engine under bundles and inputs it was not tried with: a data document that takes
// far more wasm memory than its JSON text, data files kept in folders of the bundle (as OPA's
// bundle format allows), and input strings that are not valid Unicode. Real opa CLI builds the
// bundles, real opa-wasm evaluates them.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createGzip } from 'node:zlib'
import tarStream from 'tar-stream'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { loadPolicyBundle, PolicyEvaluationError, POLICY_MEMORY_HEADROOM, readBundle } from '../../policies/engine.ts'
import { opaBinary } from '../../policies/toolchain.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-engine-sweep19-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Build a folder of Rego and data files into a wasm bundle with the real opa CLI. */
function build(name: string, files: Record<string, string>, entrypoint: string): string {
  const src = join(dir, name)
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(src, path, '..'), { recursive: true })
    writeFileSync(join(src, path), text)
  }
  const out = join(dir, `${name}.tar.gz`)
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', entrypoint, '-o', out, src], { encoding: 'utf8', timeout: 120_000 })
  if (r.status !== 0) throw new Error(`opa build: ${r.stdout}${r.stderr}`)
  return out
}

/** The bundle's files, with some replaced or added (a bundle assembled by hand or by a pipeline). */
async function repack(bundle: string, name: string, extra: Record<string, string>): Promise<string> {
  const files = await readBundle(readFileSync(bundle))
  for (const [path, text] of Object.entries(extra)) files.set(path, Buffer.from(text))
  const pack = tarStream.pack()
  for (const [path, bytes] of files) pack.entry({ name: `/${path}`, size: bytes.length }, bytes)
  pack.finalize()
  const chunks: Buffer[] = []
  await new Promise<void>((resolve, reject) => {
    pack.pipe(createGzip()).on('data', (c: Buffer) => chunks.push(c)).on('end', resolve).on('error', reject)
  })
  const out = join(dir, `${name}.tar.gz`)
  writeFileSync(out, Buffer.concat(chunks))
  return out
}

describe('a data document that takes more wasm memory than its JSON text', () => {
  // A million small numbers: 2 MB of JSON, over 40 MB once the wasm has parsed it. The cap was
  // "64 MiB + 4 × the JSON": the bundle failed to load with a bare "opa_malloc: failed".
  // One bundle (and one load: it instantiates the wasm and parses the data three times, seconds
  // each) for both tests; its runaway rule runs only in the second, on an input with a pad.
  const rego = `package big

decision := {"n": count(data.acme.ids), "v": data.acme.ids[input.i]} if not input.pad

decision := {"n": count({x | some i in numbers.range(1, 5000000); x := sprintf("%d-%s", [i, input.pad])})} if input.pad
`
  let loaded: ReturnType<typeof loadPolicyBundle> | undefined
  const policy = () => (loaded ??= loadPolicyBundle(build('big-data', { 'policy.rego': rego, 'acme/ids/data.json': JSON.stringify(Array.from({ length: 1_000_000 }, (_, i) => i % 10)) }, 'big/decision')))

  it('loads and evaluates, with the headroom beyond the data', async () => {
    const d = await policy()
    expect(d.evaluate({ i: 12 })).toEqual({ n: 1_000_000, v: 2 })
    for (let i = 0; i < 200; i++) expect(d.evaluate({ i: 999_999 - i })).toEqual({ n: 1_000_000, v: (999_999 - i) % 10 })
  }, 120_000)

  it('a runaway evaluation fails on the memory cap, and the rebuilt evaluator still sees the whole data', async () => {
    const p = await policy()
    let err: unknown
    try {
      p.evaluate({ pad: 'x'.repeat(64) })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(PolicyEvaluationError)
    expect((err as PolicyEvaluationError).message).toMatch(/opa_malloc: failed \(the evaluation needed more than its memory cap of \d+ MiB\)/)
    // Capped at the data plus the headroom, not left uncapped by the measuring.
    const cap = Number(/cap of (\d+) MiB/.exec((err as Error).message)![1])
    expect(cap).toBeGreaterThan(POLICY_MEMORY_HEADROOM / 1048576)
    expect(cap).toBeLessThan(1024)
    expect((err as PolicyEvaluationError).runawayMs).toBeGreaterThan(0)
    expect(p.evaluate({ i: 7 })).toEqual({ n: 1_000_000, v: 7 })
  }, 120_000)
})

describe('data files in folders of the bundle', () => {
  const POLICY = 'package nested\n\ndecision := {"top": data.top, "tenants": data.acme.tenants, "limits": data.limits}\n'
  it('each is the data at the path of its folder, as OPA reads a bundle; conflicting files are refused', async () => {
    const built = build('nested', { 'policy.rego': POLICY, 'data.json': '{"top": 1}' }, 'nested/decision')
    // Before: only /data.json was read, data.acme was undefined and so was the whole decision.
    const b = await repack(built, 'nested-data', { 'acme/tenants/data.json': '["acme", "globex"]', 'limits/data.yaml': 'max: 3\n' })
    expect((await loadPolicyBundle(b)).evaluate({})).toEqual({ top: 1, tenants: ['acme', 'globex'], limits: { max: 3 } })
    // The caller's data is merged on top, as before.
    expect((await loadPolicyBundle(b, { limits: { min: 1 } })).evaluate({})).toEqual({ top: 1, tenants: ['acme', 'globex'], limits: { max: 3, min: 1 } })
    // Two files setting the same value: refused naming the file, as OPA refuses the bundle.
    const clash = await repack(built, 'nested-clash', { 'data.json': '{"top": 1, "acme": {"tenants": ["x"]}}', 'acme/tenants/data.json': '["acme"]' })
    await expect(loadPolicyBundle(clash)).rejects.toThrow(`${clash}: acme/tenants/data.json conflicts with data another file of the bundle sets at acme.tenants`)
    const bad = await repack(built, 'nested-bad', { 'acme/data.json': '{"tenants": ' })
    await expect(loadPolicyBundle(bad)).rejects.toThrow(`${bad}: acme/data.json is not JSON`)
  }, 60_000)
})

describe('input strings that are not valid Unicode', () => {
  const RealInstance = WebAssembly.Instance
  afterEach(() => {
    WebAssembly.Instance = RealInstance
  })
  it('are refused before the wasm runs, saying so, without rebuilding the evaluator each time', async () => {
    const p = await loadPolicyBundle(build('echo', { 'policy.rego': 'package echo\n\ndecision := {"s": input.s, "n": count(data.big)}\n', 'big/data.json': JSON.stringify(Array.from({ length: 1000 }, (_, i) => i)) }, 'echo/decision'))
    // Count the wasm instances made from here on (opa-wasm makes one per evaluator built).
    let made = 0
    WebAssembly.Instance = class extends RealInstance {
      constructor(...args: ConstructorParameters<typeof RealInstance>) {
        super(...args)
        made++
      }
    } as typeof WebAssembly.Instance
    for (const s of ['half an emoji \ud83d', '\udc00', { k: ['x', '\udfff'] }]) {
      let err: unknown
      try {
        p.evaluate({ s })
      } catch (e) {
        err = e
      }
      // Before: "illegal string escape character" from inside the wasm, and a rebuilt evaluator
      // (data document and all) for every such request.
      expect(err).toBeInstanceOf(PolicyEvaluationError)
      expect((err as Error).message).toBe('policy ' + (err as PolicyEvaluationError).policy + ' (echo/decision): the input is not JSON the policy can take: it holds a string that is not valid Unicode (a lone UTF-16 surrogate)')
      expect((err as PolicyEvaluationError).runawayMs).toBeUndefined()
    }
    for (let i = 0; i < 200; i++) expect(() => p.evaluate({ s: `x\ud800${i}` })).toThrow(PolicyEvaluationError)
    expect(made).toBe(0)
    // Well-formed text that only looks like an escape, and paired surrogates, are fine.
    expect(p.evaluate({ s: '\\ud800 and \\\\ud83d' })).toEqual({ s: '\\ud800 and \\\\ud83d', n: 1000 })
    expect(p.evaluate({ s: 'ok 😀' })).toEqual({ s: 'ok 😀', n: 1000 })
    // A key too.
    expect(() => p.evaluate({ ['k\ud800']: 1 })).toThrow(/not valid Unicode/)
    expect(made).toBe(0)
  })
})
