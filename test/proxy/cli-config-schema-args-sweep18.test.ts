// `igw config schema <file>` (meant: validate) printed the schema and exited 0, as if the file had
// been checked. A stray argument is a usage error now (exit 2); `igw config schema` alone still
// prints the schema.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const IGW = fileURLToPath(new URL('../../bin/igw.js', import.meta.url))

describe('igw config schema', () => {
  it('prints the JSON Schema with no argument, and refuses an argument with a usage error', () => {
    const ok = spawnSync(process.execPath, [IGW, 'config', 'schema'], { encoding: 'utf8', timeout: 30_000 })
    expect(ok.status).toBe(0)
    expect((JSON.parse(ok.stdout) as { $schema?: string }).$schema).toMatch(/json-schema/)
    const bad = spawnSync(process.execPath, [IGW, 'config', 'schema', 'igw.yaml'], { encoding: 'utf8', timeout: 30_000 })
    expect(bad.status).toBe(2)
    expect(bad.stdout).toBe('')
    expect(bad.stderr).toMatch(/usage: igw config validate <file>… \| igw config schema/)
  })
})
