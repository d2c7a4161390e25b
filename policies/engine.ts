// Evaluates a committed OPA bundle in-process with @open-policy-agent/opa-wasm: the Rego was
// compiled to wasm by the real opa CLI (`igw policy build`), so running needs no Go and no
// OPA server, and a decision costs microseconds.
import { readFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { createGunzip } from 'node:zlib'
import { loadPolicy, type LoadedPolicy } from '@open-policy-agent/opa-wasm'
import tarStream from 'tar-stream'
import { bundlePath } from './catalog.ts'

export interface PolicyEvaluator {
  readonly name: string
  readonly entrypoints: string[]
  /** Evaluate one entrypoint; returns the rule's value (undefined when the rule is undefined). */
  evaluate<T = unknown>(input: unknown, entrypoint?: string): T | undefined
}

/** The files of a bundle tarball (policy.wasm, data.json, .manifest, sources). */
export async function readBundle(bytes: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>()
  const extract = tarStream.extract()
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: unknown) => chunks.push(c as Buffer))
    stream.on('end', () => {
      files.set(header.name.replace(/^\/+/, ''), Buffer.concat(chunks))
      next()
    })
    stream.resume()
  })
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve)
    extract.on('error', reject)
    Readable.from(bytes).pipe(createGunzip()).on('error', reject).pipe(extract)
  })
  return files
}

class WasmPolicy implements PolicyEvaluator {
  readonly name: string
  readonly entrypoints: string[]
  readonly #policy: LoadedPolicy
  constructor(name: string, policy: LoadedPolicy) {
    this.name = name
    this.#policy = policy
    this.entrypoints = Object.keys(policy.entrypoints as Record<string, number>)
  }
  evaluate<T>(input: unknown, entrypoint?: string): T | undefined {
    const rs = this.#policy.evaluate(input, entrypoint ?? this.entrypoints[0]) as { result?: T }[]
    return rs[0]?.result
  }
}

/** Load a bundle (by catalog name or file path) and return an evaluator. */
export async function loadPolicyBundle(nameOrPath: string, data?: object): Promise<PolicyEvaluator> {
  const path = nameOrPath.endsWith('.tar.gz') ? nameOrPath : bundlePath(nameOrPath)
  const files = await readBundle(await readFile(path))
  const wasm = files.get('policy.wasm')
  if (!wasm) throw new Error(`${path}: not a wasm bundle (no policy.wasm); build it with \`igw policy build\``)
  const policy = await loadPolicy(wasm)
  const bundled = files.get('data.json')
  const base = bundled ? (JSON.parse(bundled.toString('utf8')) as object) : {}
  policy.setData({ ...base, ...data })
  return new WasmPolicy(nameOrPath, policy)
}
