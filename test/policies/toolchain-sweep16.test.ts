// `igw policy build [--check]` runs the real opa CLI in scratch folders: they go away with the
// build (CI and the test suite run --check on every push, and used to leave three folders in the
// temp directory each time). Run as users run it: the CLI, as a child process, with its own TMPDIR.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ROOT } from '../../policies/catalog.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-toolchain-sweep16-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

describe('igw policy build leaves nothing behind in the temp directory', () => {
  it('--check passes (the committed bundles are current) and its scratch folders are gone afterwards', () => {
    const r = spawnSync(process.execPath, ['bin/igw.js', 'policy', 'build', '--check'], { cwd: ROOT, env: { ...process.env, TMPDIR: scratch }, encoding: 'utf8', timeout: 120_000 })
    expect([r.status, r.stdout]).toEqual([0, 'dlp: up to date\nadmin: up to date\n'])
    // Before: igw-opa-caps-*/capabilities.json, igw-opa-*/dlp.tar.gz and igw-opa-*/admin.tar.gz stayed.
    expect(readdirSync(scratch)).toEqual([])
  })
})
