// Render a Kustomize directory offline. CI installs the pinned kustomize with
// deploy/ci/install-tools.sh (go install); a machine with kubectl can use its built-in
// `kubectl kustomize` instead. IGW_KUSTOMIZE names a binary explicitly.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'

export type KubeObject = Record<string, unknown> & {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
}

function goBin(): string {
  const r = spawnSync('go', ['env', 'GOPATH'], { encoding: 'utf8' })
  return join(r.status === 0 && r.stdout.trim() ? r.stdout.trim().split(':')[0]! : join(homedir(), 'go'), 'bin')
}

let cached: string[] | undefined

/** The command that renders a directory: [binary, ...args before the directory]. */
export function kustomizeCommand(): string[] {
  if (cached) return cached
  const candidates: string[][] = []
  if (process.env.IGW_KUSTOMIZE) candidates.push([process.env.IGW_KUSTOMIZE, 'build'])
  candidates.push(['kustomize', 'build'], [join(goBin(), 'kustomize'), 'build'], ['kubectl', 'kustomize'])
  for (const c of candidates) {
    if (c[0]!.includes('/') && !existsSync(c[0]!)) continue
    const probe = spawnSync(c[0]!, c[1] === 'build' ? ['version'] : ['version', '--client'], { encoding: 'utf8' })
    if (probe.status === 0) return (cached = c)
  }
  throw new Error('no kustomize found: run deploy/ci/install-tools.sh (pinned kustomize via go install), or install kubectl, or set IGW_KUSTOMIZE')
}

export function renderKustomize(dir: string): KubeObject[] {
  const [bin, ...args] = kustomizeCommand()
  const out = execFileSync(bin!, [...args, dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 32 * 1024 * 1024 })
  return parseAllDocuments(out)
    .map((d) => d.toJS() as KubeObject | null)
    .filter((o): o is KubeObject => o !== null)
}
