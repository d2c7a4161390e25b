// YAML merge keys (`<<: *anchor`), as docker-compose and Kubernetes manifests use them to share a
// block between entries: a config repeating one upstream over many routes could not, and was
// refused with `unknown key "<<"` and the merged keys reported missing. Merges resolve after
// ${VAR} substitution, explicit keys win, and a merge of something that is not a map is a config
// error naming the problem. Through the real `igw config validate` and the loader.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../config/load.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-merge-'))
const file = (name: string, text: string) => {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}
const igw = (...args: string[]) => spawnSync(process.execPath, [join(import.meta.dirname, '../../bin/igw.js'), ...args], { encoding: 'utf8', env: { ...process.env, UP: 'http://10.0.0.1:5000' } })

const MERGED = `mode: ingress
routes:
  - &graphql
    name: a
    upstream: \${UP:-http://127.0.0.1:4000}
    type: graphql
    match: { pathPrefix: /a }
    maxBodyBytes: 2mib
  - <<: *graphql
    name: b
    match: { pathPrefix: /b }
`

describe('YAML merge keys in config files', () => {
  it('a route merged from another\'s anchor gets its keys, its own override them, ${VAR} applies to both', () => {
    const { config } = loadConfigFile(file('merged.yaml', MERGED), { UP: 'http://10.0.0.1:5000' })
    expect(config.routes.map((r) => [r.name, r.upstream, r.type, (r.match as { pathPrefix?: string }).pathPrefix, r.maxBodyBytes])).toEqual([
      ['a', 'http://10.0.0.1:5000', 'graphql', '/a', 2 * 1024 * 1024],
      ['b', 'http://10.0.0.1:5000', 'graphql', '/b', 2 * 1024 * 1024],
    ])
    const r = igw('config', 'validate', join(dir, 'merged.yaml'))
    expect(r.stderr + r.stdout).toMatch(/valid/)
    expect(r.status).toBe(0)
  })

  it('merging a scalar is a config error (exit 78) that says why', () => {
    const p = file('bad.yaml', 'mode: ingress\nroutes:\n  - <<: 5\n    name: a\n    upstream: http://127.0.0.1:1\n')
    const r = igw('config', 'validate', p)
    expect(r.status).toBe(78)
    expect(r.stderr + r.stdout).toMatch(/Merge sources must be maps/)
  })
})
