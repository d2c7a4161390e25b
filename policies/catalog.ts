// Every policy bundle igw ships: its Rego sources (a folder under policies/), the entrypoints
// compiled into wasm, and the committed bundle the runtime loads. `igw policy build` rebuilds
// them with the real opa CLI; `--check` (CI) fails when a committed bundle is stale.
import { fileURLToPath } from 'node:url'

export interface PolicyBundleSpec {
  name: string
  /** Folder (relative to the repo root) holding the .rego files and their _test.rego. */
  dir: string
  /** Rego rule paths compiled as wasm entrypoints, e.g. "intelgraph/dlp/decision". */
  entrypoints: string[]
}

export const ROOT = fileURLToPath(new URL('..', import.meta.url))

export const POLICY_BUNDLES: PolicyBundleSpec[] = [
  { name: 'dlp', dir: 'policies/dlp', entrypoints: ['intelgraph/dlp/decision'] },
  { name: 'admin', dir: 'policies/admin', entrypoints: ['intelgraph/admin/decision'] },
]

export function bundlePath(name: string): string {
  return `${ROOT}policies/bundles/${name}.tar.gz`
}
