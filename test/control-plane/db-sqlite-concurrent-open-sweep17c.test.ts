// Several processes opening the same NEW SQLite file at once (two instances started together, a
// restart overlapping the old process, `igw control-plane` beside a script): switching the file
// to WAL takes an exclusive lock, and with busy_timeout 0 the processes that met it failed their
// start with "database is locked". Opening now waits for the lock like any statement; every
// process opens and migrates, and exactly one applies the migrations.
import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { expect, it } from 'vitest'
import { MIGRATIONS } from '../../control-plane/migrations.ts'

const root = resolve(import.meta.dirname, '../..')

/** A child that loads db.ts and migrations.ts, waits until `startAt`, then opens and migrates `file`. */
const CHILD = `
const { openDb } = await import(${JSON.stringify(join(root, 'control-plane/db.ts'))})
const { migrate } = await import(${JSON.stringify(join(root, 'control-plane/migrations.ts'))})
const [file, startAt] = process.argv.slice(1)
await new Promise((r) => setTimeout(r, Math.max(0, Number(startAt) - Date.now())))
try {
  const db = openDb('sqlite:' + file)
  const applied = await migrate(db)
  await db.close()
  console.log(JSON.stringify({ ok: applied }))
} catch (err) {
  console.log(JSON.stringify({ err: String(err && err.message) }))
}
`

function child(file: string, startAt: number): Promise<{ ok?: number[]; err?: string }> {
  return new Promise((resolveChild, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', CHILD, file, String(startAt)], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.on('data', (d: Buffer) => (out += d.toString()))
    p.stderr.on('data', (d: Buffer) => (err += d.toString()))
    p.on('error', reject)
    p.on('close', () => {
      const line = out.trim().split('\n').at(-1) ?? ''
      try {
        resolveChild(JSON.parse(line) as { ok?: number[]; err?: string })
      } catch {
        resolveChild({ err: `no result: ${out}${err}` })
      }
    })
  })
}

it('processes opening one new SQLite file at the same moment all start; each migration is applied once', async () => {
  const failures: string[] = []
  for (let round = 0; round < 4; round++) {
    const file = join(mkdtempSync(join(tmpdir(), 'igw-sqlite-open17c-')), 'igw.db')
    // Loading the modules takes a while on a busy machine: every child starts its open together.
    const startAt = Date.now() + 3_000
    const results = await Promise.all(Array.from({ length: 5 }, () => child(file, startAt)))
    for (const r of results) if (r.err !== undefined) failures.push(r.err)
    if (failures.length === 0) {
      // Each migration is its own transaction: between them, the processes may take turns.
      const applied = results.flatMap((r) => r.ok ?? []).sort((a, b) => a - b)
      expect(applied).toEqual(MIGRATIONS.map((m) => m.version))
    }
  }
  expect(failures).toEqual([])
}, 120_000)
