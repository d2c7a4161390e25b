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

const UTF8 = new TextEncoder()
/** The most a wasm32 memory may grow to (64 Ki pages of 64 KiB). */
const WASM_MAX_PAGES = 65536

/** A string that is not valid Unicode: OPA's wasm cannot take it (see `policyJson`). */
export class NotUnicodeError extends Error {}

/**
 * `value` as the UTF-8 JSON text the wasm parses (opa-wasm would stringify it the same way).
 * JSON.stringify writes a lone UTF-16 surrogate (half an emoji cut by a client, "\ud83d" in a
 * GraphQL variable or a JWT claim) as a `\udXXX` escape, which OPA's wasm JSON parser refuses
 * with an abort ("illegal string escape character"); an abort leaves the instance unusable, so
 * each such request rebuilt it, data document and all (seconds with a large one: any client
 * could hold a worker that long per request). Refused here instead, before the wasm runs.
 * JSON.stringify escapes only lone surrogates (paired ones are written as they are), so every
 * such escape is one; an escaped backslash (`\\`) is matched first, so the six characters
 * `\ud800` in a string are not taken for one. Undefined when there is no JSON value.
 */
export function policyJson(value: unknown): ArrayBuffer | undefined {
  const text = JSON.stringify(value) as string | undefined
  if (text === undefined) return undefined
  if (text.includes('\\ud')) {
    for (const m of text.matchAll(/\\\\|\\ud[89a-f][0-9a-f]{2}/g)) {
      if (m[0].length !== 2) throw new NotUnicodeError('it holds a string that is not valid Unicode (a lone UTF-16 surrogate)')
    }
  }
  const bytes = UTF8.encode(text)
  return bytes.byteLength === bytes.buffer.byteLength ? bytes.buffer : bytes.slice().buffer
}

/** Where the data document ends in the instance's memory: the input and each evaluation's heap start there. */
function dataEnd(policy: LoadedPolicy): number {
  return (policy as unknown as { dataHeapPtr: number }).dataHeapPtr
}

function isOutOfMemory(err: unknown): boolean {
  return (typeof err === 'string' && err.includes('opa_malloc: failed')) || err instanceof RangeError
}

class WasmPolicy implements PolicyEvaluator {
  readonly name: string
  readonly entrypoints: string[]
  readonly #module: WebAssembly.Module
  /** The data document as the JSON text the wasm parses (serialized once, not at every rebuild). */
  readonly #data: ArrayBuffer
  #maxPages: number
  readonly #budgetMs: number
  /** time.now_ns of the evaluation running (undefined until it asks). */
  #nowNs: number | undefined = undefined
  readonly #custom: Record<string, (...args: unknown[]) => unknown> = {
    'time.now_ns': () => (this.#nowNs ??= Math.round((performance.timeOrigin + performance.now()) * 1e3) * 1e3),
  }
  #policy: LoadedPolicy
  constructor(name: string, module: WebAssembly.Module, data: object, opts: LoadPolicyOptions) {
    this.name = name
    this.#module = module
    try {
      this.#data = policyJson(data)!
    } catch (err) {
      throw `the data document is not JSON the policy can take: ${(err as Error).message}`
    }
    this.#budgetMs = opts.budgetMs ?? Number.POSITIVE_INFINITY
    // Room for the data document (parsed, it takes a few times its JSON text) plus the headroom.
    this.#maxPages = this.#pagesFor(POLICY_MEMORY_HEADROOM + 4 * this.#data.byteLength)
    let policy: LoadedPolicy | undefined
    try {
      policy = this.#instantiate()
    } catch (err) {
      if (!isOutOfMemory(err)) throw err
    }
    if (policy === undefined || this.#maxPages * WASM_PAGE - dataEnd(policy) < POLICY_MEMORY_HEADROOM) {
      // Parsed, the data took more than the estimate (a million small numbers: 2 MB of JSON,
      // over 40 MB in the wasm): the bundle failed to load with a bare "opa_malloc: failed", or
      // loaded with less than the headroom left and every evaluation failed as a runaway.
      // Measure what the data takes, uncapped, and cap the memory at that plus the headroom.
      const probe = loadPolicySync(this.#module, { initial: 5 }, this.#custom as never)
      probe.setData(this.#data as never)
      this.#maxPages = this.#pagesFor(dataEnd(probe) + POLICY_MEMORY_HEADROOM)
      policy = this.#instantiate()
    }
    this.#policy = policy
    this.entrypoints = Object.keys(this.#policy.entrypoints as Record<string, number>)
  }

  #pagesFor(bytes: number): number {
    return Math.min(WASM_MAX_PAGES, Math.ceil(bytes / WASM_PAGE) + 5)
  }

  #instantiate(): LoadedPolicy {
    const policy = loadPolicySync(this.#module, { initial: 5, maximum: this.#maxPages }, this.#custom as never)
    policy.setData(this.#data as never)
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
    let json: ArrayBuffer | undefined
    try {
      json = policyJson(input)
    } catch (err) {
      // Not JSON the policy can take (a BigInt, a cycle, a lone surrogate): the wasm never ran,
      // the instance is as it was.
      throw new PolicyEvaluationError(this.name, e, `the input is not JSON the policy can take: ${(err as Error).message}`)
    }
    let rs: { result?: T }[]
    this.#nowNs = undefined
    const started = performance.now()
    try {
      rs = this.#policy.evaluate(json as never, e) as { result?: T }[]
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
  const base = await bundleData(path, files)
  let policy: WasmPolicy
  try {
    policy = new WasmPolicy(nameOrPath, module, mergeData(base, data ?? {}) as object, opts)
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

const DATA_FILES = new Set(['data.json', 'data.yaml', 'data.yml'])

/**
 * The bundle's data document: every data.json (data.yaml, data.yml) in it, each at the path of its
 * folder, as OPA reads a bundle (`/acme/tenants/data.json` is `data.acme.tenants`). Only the root
 * one was read: a bundle packed with its data in folders (OPA's bundle format allows it, `opa
 * inspect` lists them) loaded with none of it, and the policy quietly saw `data.acme` undefined.
 * Two files giving a value to the same path are refused, as OPA refuses them.
 */
async function bundleData(path: string, files: Map<string, Buffer>): Promise<Record<string, unknown>> {
  const root: Record<string, unknown> = {}
  const names = [...files.keys()].filter((n) => DATA_FILES.has(n.slice(n.lastIndexOf('/') + 1))).sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1))
  for (const name of names) {
    const text = files.get(name)!.toString('utf8')
    let value: unknown
    try {
      value = name.endsWith('.json') ? JSON.parse(text) : (await import('yaml')).parse(text)
    } catch (err) {
      throw new Error(`${path}: ${name} is not ${name.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`, { cause: err })
    }
    const at = name.split('/').slice(0, -1).filter((s) => s !== '' && s !== '.')
    if (at.length === 0 && !isPlainObject(value)) throw new Error(`${path}: ${name} is not a JSON object (the bundle's data document)`)
    let node = root
    for (const key of at) {
      if (!Object.hasOwn(node, key)) defineKey(node, key, {})
      const next = node[key]
      if (!isPlainObject(next)) throw new Error(`${path}: ${name} conflicts with data another file of the bundle sets at ${at.join('.')}`)
      node = next
    }
    if (at.length === 0 || isPlainObject(value)) {
      if (!isPlainObject(value) || !insertAll(node, value)) throw new Error(`${path}: ${name} conflicts with data another file of the bundle sets at ${at.join('.') || 'the root'}`)
    } else {
      const parent = at.slice(0, -1).reduce<Record<string, unknown>>((n, k) => n[k] as Record<string, unknown>, root)
      const key = at[at.length - 1]!
      if (isPlainObject(parent[key]) && Object.keys(parent[key]).length === 0) defineKey(parent, key, value)
      else throw new Error(`${path}: ${name} conflicts with data another file of the bundle sets at ${at.join('.')}`)
    }
  }
  return root
}

/** Copy `from` into `into` object by object; false when both give a leaf (or an array) a value. */
function insertAll(into: Record<string, unknown>, from: Record<string, unknown>): boolean {
  for (const [k, v] of Object.entries(from)) {
    if (!Object.hasOwn(into, k)) defineKey(into, k, v)
    else if (isPlainObject(into[k]) && isPlainObject(v)) {
      if (!insertAll(into[k], v)) return false
    } else return false
  }
  return true
}

function defineKey(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
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
