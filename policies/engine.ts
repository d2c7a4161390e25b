// Evaluates a committed OPA bundle in-process with @open-policy-agent/opa-wasm: the Rego was
// compiled to wasm by the real opa CLI (`igw policy build`), so running needs no Go and no
// OPA server, and a decision costs microseconds.
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import * as opaWasm from '@open-policy-agent/opa-wasm'
import tarStream from 'tar-stream'
import { POLICY_BUNDLES, bundlePath } from './catalog.ts'

type LoadedPolicy = opaWasm.LoadedPolicy
// The SDK's ESM entry has loadPolicySync only on its default export (its .d.mts declares it as a
// named one, which is not there at run time).
const loadPolicySync = (opaWasm as unknown as { default: { loadPolicySync: typeof opaWasm.loadPolicySync } }).default.loadPolicySync

/**
 * Builtins the policy's wasm calls out to JavaScript for (those not compiled into the wasm) that
 * the SDK implements: its own table (`src/builtins`, not exported by the package, so read by
 * path); should a later SDK move it, its capabilities list, which names every builtin it supports.
 */
function sdkBuiltins(): ReadonlySet<string> {
  const req = createRequire(import.meta.url)
  try {
    const main = req.resolve('@open-policy-agent/opa-wasm')
    return new Set(Object.keys(createRequire(main)('./builtins/index.js') as object))
  } catch {
    const caps = req('@open-policy-agent/opa-wasm/capabilities.json') as { builtins?: { name: string }[] }
    return new Set((caps.builtins ?? []).map((b) => b.name))
  }
}
const SDK_BUILTINS = sdkBuiltins()

/**
 * Builtins igw gives every policy on top of the SDK's (opa-wasm's `customBuiltins`). Only
 * deterministic ones without I/O: `time.now_ns` is the evaluation's start, the same value
 * however often one evaluation calls it (as OPA evaluates it). `http.send`, `net.lookup_ip_addr`,
 * `opa.runtime`, crypto and JWT builtins are not provided: a bundle that calls one is refused at
 * load (`checkBuiltins`) — it would otherwise load and fail every evaluation that reaches it.
 */
export const IGW_BUILTINS: readonly string[] = ['time.now_ns']

/**
 * A policy's wasm memory may grow to this much beyond what its data needs: OPA's wasm frees
 * nothing during an evaluation, so the memory an evaluation takes is a measure of its work. A
 * runaway comprehension (`{x | some i in numbers.range(1, 1e6); x := sprintf(…)}`) grew the
 * instance to gigabytes over a minute, blocking the worker; capped, it fails in well under a
 * second with "opa_malloc: failed" (and the caller denies).
 */
export const POLICY_MEMORY_HEADROOM = 64 * 1024 * 1024
const WASM_PAGE = 64 * 1024

export interface PolicyEvaluator {
  readonly name: string
  readonly entrypoints: string[]
  /**
   * Evaluate one entrypoint; returns the rule's value (undefined when the rule is undefined).
   * Throws PolicyEvaluationError when the policy fails (a conflict, a builtin the wasm runtime
   * lacks, an entrypoint the bundle does not have): callers deny.
   */
  evaluate<T = unknown>(input: unknown, entrypoint?: string): T | undefined
}

/** A policy that could not decide; `message` names the policy, the entrypoint and the cause. */
export class PolicyEvaluationError extends Error {
  readonly policy: string
  readonly entrypoint: string
  /**
   * Set (to the evaluation's duration, ms) when the evaluation ran away: over the time budget,
   * or out of the memory cap. Undefined for other failures (a conflict, a missing builtin).
   */
  readonly runawayMs: number | undefined
  constructor(policy: string, entrypoint: string, cause: unknown, runawayMs?: number) {
    // opa-wasm throws strings (opa_abort: "authz.rego:5:1: var assignment conflict", an unknown
    // entrypoint) and plain objects (a builtin it does not implement), not Errors.
    const detail = cause instanceof Error ? cause.message : typeof cause === 'string' ? cause : typeof (cause as { message?: unknown } | null)?.message === 'string' ? (cause as { message: string }).message : String(cause)
    super(`policy ${policy} (${entrypoint}): ${detail}`, { cause })
    this.name = 'PolicyEvaluationError'
    this.policy = policy
    this.entrypoint = entrypoint
    this.runawayMs = runawayMs
  }
}

/** The files of a bundle tarball (policy.wasm, data.json, .manifest, sources). */
export async function readBundle(bytes: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>()
  const extract = tarStream.extract()
  await new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = []
      // A tarball cut inside an entry (a bundle still being copied, a full disk) fails that
      // entry's stream: without a listener its 'error' was an uncaught exception that took the
      // worker thread down (or the control plane) instead of refusing the bundle.
      stream.on('error', reject)
      stream.on('data', (c: unknown) => chunks.push(c as Buffer))
      stream.on('end', () => {
        files.set(header.name.replace(/^\/+/, ''), Buffer.concat(chunks))
        next()
      })
      stream.resume()
    })
    extract.on('finish', resolve)
    extract.on('error', reject)
    Readable.from(bytes).pipe(createGunzip()).on('error', reject).pipe(extract)
  })
  return files
}

class WasmPolicy implements PolicyEvaluator {
  readonly name: string
  readonly entrypoints: string[]
  readonly #module: WebAssembly.Module
  readonly #data: object
  readonly #maxPages: number
  readonly #budgetMs: number
  /** time.now_ns of the evaluation running (undefined until it asks). */
  #nowNs: number | undefined = undefined
  readonly #custom: Record<string, (...args: unknown[]) => unknown> = {
    'time.now_ns': () => (this.#nowNs ??= Math.round((performance.timeOrigin + performance.now()) * 1e3) * 1e3),
  }
  #policy: LoadedPolicy
  constructor(name: string, module: WebAssembly.Module, data: object, dataBytes: number, opts: LoadPolicyOptions) {
    this.name = name
    this.#module = module
    this.#data = data
    // Room for the data document (parsed, it takes a few times its JSON text) plus the headroom.
    this.#maxPages = Math.ceil((POLICY_MEMORY_HEADROOM + 4 * dataBytes) / WASM_PAGE) + 5
    this.#budgetMs = opts.budgetMs ?? Number.POSITIVE_INFINITY
    this.#policy = this.#instantiate()
    this.entrypoints = Object.keys(this.#policy.entrypoints as Record<string, number>)
  }

  #instantiate(): LoadedPolicy {
    const policy = loadPolicySync(this.#module, { initial: 5, maximum: this.#maxPages }, this.#custom as never)
    policy.setData(this.#data)
    return policy
  }

  /** Builtins the wasm calls out for (its `builtins()` export) that neither the SDK nor igw implements. */
  missingBuiltins(): string[] {
    const p = this.#policy as unknown as { wasmInstance: WebAssembly.Instance; mem: WebAssembly.Memory }
    const ex = p.wasmInstance.exports as { builtins(): number; opa_json_dump(addr: number): number }
    const at = ex.opa_json_dump(ex.builtins())
    const bytes = new Uint8Array(p.mem.buffer)
    let end = at
    while (bytes[end] !== 0) end++
    const names = Object.keys(JSON.parse(new TextDecoder().decode(bytes.subarray(at, end))) as Record<string, number>)
    return names.filter((n) => !SDK_BUILTINS.has(n) && !Object.hasOwn(this.#custom, n)).sort()
  }

  evaluate<T>(input: unknown, entrypoint?: string): T | undefined {
    const e = entrypoint ?? this.entrypoints[0]!
    let rs: { result?: T }[]
    this.#nowNs = undefined
    const started = performance.now()
    try {
      rs = this.#policy.evaluate(input, e) as { result?: T }[]
    } catch (err) {
      // An error thrown out of the wasm (opa_abort, a missing builtin) unwinds its frames
      // without restoring the module's stack pointer: every failure leaks stack, and after a
      // few hundred the instance answers every later evaluation, even ones that would allow,
      // with "memory access out of bounds". A fresh instance (a few hundred µs, on the failure
      // path only) keeps one bad input from breaking the policy for everyone.
      if (Object.hasOwn(this.#policy.entrypoints as object, e)) this.#policy = this.#instantiate()
      else err = `entrypoint "${e}" is not in this bundle (entrypoints: ${this.entrypoints.join(', ')})`
      const ms = performance.now() - started
      // Out of memory is how a runaway evaluation ends (the memory cap): say so, and count it
      // with the ones over the time budget.
      const oom = typeof err === 'string' && err.includes('opa_malloc: failed')
      if (oom) err = `${err as string} (the evaluation needed more than its memory cap of ${Math.round((this.#maxPages * WASM_PAGE) / 1048576)} MiB)`
      throw new PolicyEvaluationError(this.name, e, err, oom || ms > this.#budgetMs ? ms : undefined)
    }
    const ms = performance.now() - started
    if (ms > this.#budgetMs) {
      // The wasm cannot be interrupted, so the time is spent; what a budget can do is make a
      // policy that runs this long fail visibly (the caller denies, logs and counts) instead of
      // quietly holding the worker on every request. The memory it grew goes with the instance.
      this.#policy = this.#instantiate()
      throw new PolicyEvaluationError(this.name, e, `evaluation took ${Math.round(ms)} ms, over its budget of ${this.#budgetMs} ms`, ms)
    }
    return rs[0]?.result
  }
}

export interface LoadPolicyOptions {
  /** Entrypoints the caller will evaluate: a bundle without one of them fails to load. */
  entrypoints?: readonly string[]
  /**
   * Refuse a bundle whose wasm calls a builtin neither opa-wasm nor igw implements (`http.send`,
   * `crypto.*`…): it would load and then fail every evaluation that reaches the call. The error
   * names the builtins and the bundle's .rego files that call them.
   */
  checkBuiltins?: boolean
  /**
   * An evaluation that takes longer than this (ms) fails with a PolicyEvaluationError whose
   * `runawayMs` is set (its result is not used). Default: no budget.
   */
  budgetMs?: number
}

/** Load a bundle (by catalog name or file path) and return an evaluator. */
export async function loadPolicyBundle(nameOrPath: string, data?: object, opts: LoadPolicyOptions = {}): Promise<PolicyEvaluator> {
  const path = nameOrPath.endsWith('.tar.gz') ? nameOrPath : bundlePath(nameOrPath)
  let files: Map<string, Buffer>
  try {
    files = await readBundle(await readFile(path))
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    // "incorrect header check" alone does not say which file, nor what to do about it.
    if (e.code === 'ENOENT') {
      const catalog = path === nameOrPath ? '' : ` ("${nameOrPath}" is not a path ending in .tar.gz, so it names a bundle in the catalog: ${POLICY_BUNDLES.map((b) => b.name).join(', ')})`
      throw new Error(`policy bundle ${path} not found (ENOENT)${catalog}; build it with \`igw policy build\``, { cause: err })
    }
    throw new Error(`${path}: not a readable policy bundle (a .tar.gz built by \`igw policy build\`): ${e.message}`, { cause: err })
  }
  const wasm = files.get('policy.wasm')
  if (!wasm) throw new Error(`${path}: not a wasm bundle (no policy.wasm); build it with \`igw policy build\``)
  let module: WebAssembly.Module
  try {
    module = await WebAssembly.compile(wasm as Uint8Array<ArrayBuffer>)
  } catch (err) {
    throw new Error(`${path}: policy.wasm does not compile: ${(err as Error).message}`, { cause: err })
  }
  const bundled = files.get('data.json')
  let base: unknown = {}
  if (bundled) {
    try {
      base = JSON.parse(bundled.toString('utf8'))
    } catch (err) {
      throw new Error(`${path}: data.json is not JSON: ${(err as Error).message}`, { cause: err })
    }
    if (!isPlainObject(base)) throw new Error(`${path}: data.json is not a JSON object (the bundle's data document)`)
  }
  let policy: WasmPolicy
  try {
    policy = new WasmPolicy(nameOrPath, module, mergeData(base, data ?? {}) as object, bundled?.length ?? 0, opts)
  } catch (err) {
    // opa-wasm throws strings ("unsupported ABI version 2") and plain objects.
    throw new Error(`${path}: the policy does not load: ${typeof err === 'string' ? err : ((err as { message?: string } | null)?.message ?? String(err))}`, { cause: err })
  }
  if (opts.checkBuiltins) {
    const missing = policy.missingBuiltins()
    if (missing.length) {
      const sources = regoFiles(files)
      const from = sources.length === 0 ? '' : ` (policy file${sources.length > 1 ? 's' : ''} ${sources.slice(0, 5).join(', ')}${sources.length > 5 ? `, … ${sources.length} in all` : ''})`
      throw new Error(
        `${path}${from}: the policy calls builtin${missing.length > 1 ? 's' : ''} the wasm runtime does not implement: ${missing.join(', ')}. It would fail every evaluation that reaches ${missing.length > 1 ? 'them' : 'it'}; opa-wasm implements a subset of OPA's builtins (see its capabilities.json) and igw adds ${IGW_BUILTINS.join(', ')}. Build against those capabilities, as \`igw policy build\` does, to catch this at build time`,
      )
    }
  }
  const missing = (opts.entrypoints ?? []).filter((e) => !policy.entrypoints.includes(e))
  if (missing.length) throw new Error(`${path}: the bundle has no entrypoint ${missing.map((e) => `"${e}"`).join(', ')} (it has: ${policy.entrypoints.join(', ') || 'none'})`)
  return policy
}

/**
 * The .rego files the bundle was built from. A wasm bundle carries each as a stub (its package and
 * an import of the entrypoint), not its source, so which one calls a builtin cannot be told; with
 * the one file most bundles have, this is it.
 */
function regoFiles(files: Map<string, Buffer>): string[] {
  const out: string[] = []
  for (const name of files.keys()) if (name.endsWith('.rego')) out.push(name)
  return out.sort()
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * The bundle's data document with the caller's on top, merged object by object, as OPA merges
 * data documents: the caller's `igw.dlp.allowed_presets` must not wipe the bundle's own
 * `igw.dlp.*` (a shallow spread replaced the whole `igw` tree). The caller wins at leaves and
 * arrays. Keys are defined, not assigned: a "__proto__" key in data.json stays a key.
 */
function mergeData(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(base)) Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true })
  for (const [k, v] of Object.entries(over)) Object.defineProperty(out, k, { value: Object.hasOwn(base, k) ? mergeData(base[k], v) : v, enumerable: true, writable: true, configurable: true })
  return out
}
