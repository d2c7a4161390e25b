// Evaluates a committed OPA bundle in-process with @open-policy-agent/opa-wasm: the Rego was
// compiled to wasm by the real opa CLI (`igw policy build`), so running needs no Go and no
// OPA server, and a decision costs microseconds.
import { readFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import * as opaWasm from '@open-policy-agent/opa-wasm'
import tarStream from 'tar-stream'
import { POLICY_BUNDLES, bundlePath } from './catalog.ts'

type LoadedPolicy = opaWasm.LoadedPolicy
// The SDK's ESM entry has loadPolicySync only on its default export (its .d.mts declares it as a
// named one, which is not there at run time).
const loadPolicySync = (opaWasm as unknown as { default: { loadPolicySync: typeof opaWasm.loadPolicySync } }).default.loadPolicySync

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
  constructor(policy: string, entrypoint: string, cause: unknown) {
    // opa-wasm throws strings (opa_abort: "authz.rego:5:1: var assignment conflict", an unknown
    // entrypoint) and plain objects (a builtin it does not implement), not Errors.
    const detail = cause instanceof Error ? cause.message : typeof cause === 'string' ? cause : typeof (cause as { message?: unknown } | null)?.message === 'string' ? (cause as { message: string }).message : String(cause)
    super(`policy ${policy} (${entrypoint}): ${detail}`, { cause })
    this.name = 'PolicyEvaluationError'
    this.policy = policy
    this.entrypoint = entrypoint
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
  #policy: LoadedPolicy
  constructor(name: string, module: WebAssembly.Module, data: object) {
    this.name = name
    this.#module = module
    this.#data = data
    this.#policy = WasmPolicy.#instantiate(module, data)
    this.entrypoints = Object.keys(this.#policy.entrypoints as Record<string, number>)
  }

  static #instantiate(module: WebAssembly.Module, data: object): LoadedPolicy {
    const policy = loadPolicySync(module)
    policy.setData(data)
    return policy
  }

  evaluate<T>(input: unknown, entrypoint?: string): T | undefined {
    const e = entrypoint ?? this.entrypoints[0]!
    let rs: { result?: T }[]
    try {
      rs = this.#policy.evaluate(input, e) as { result?: T }[]
    } catch (err) {
      // An error thrown out of the wasm (opa_abort, a missing builtin) unwinds its frames
      // without restoring the module's stack pointer: every failure leaks stack, and after a
      // few hundred the instance answers every later evaluation, even ones that would allow,
      // with "memory access out of bounds". A fresh instance (a few hundred µs, on the failure
      // path only) keeps one bad input from breaking the policy for everyone.
      if (Object.hasOwn(this.#policy.entrypoints as object, e)) this.#policy = WasmPolicy.#instantiate(this.#module, this.#data)
      else err = `entrypoint "${e}" is not in this bundle (entrypoints: ${this.entrypoints.join(', ')})`
      throw new PolicyEvaluationError(this.name, e, err)
    }
    return rs[0]?.result
  }
}

export interface LoadPolicyOptions {
  /** Entrypoints the caller will evaluate: a bundle without one of them fails to load. */
  entrypoints?: readonly string[]
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
  const policy = new WasmPolicy(nameOrPath, module, mergeData(base, data ?? {}) as object)
  const missing = (opts.entrypoints ?? []).filter((e) => !policy.entrypoints.includes(e))
  if (missing.length) throw new Error(`${path}: the bundle has no entrypoint ${missing.map((e) => `"${e}"`).join(', ')} (it has: ${policy.entrypoints.join(', ') || 'none'})`)
  return policy
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
