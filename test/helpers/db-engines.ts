// The two store engines a control-plane test runs on, for `describe.each`: a fresh SQLite file
// and a fresh database on the file's TestPostgres. `pg` is a getter because the server is usually
// started in a beforeAll, after the engine list is built.
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestPostgres } from './postgres.ts'

export interface DbEngine {
  name: 'sqlite' | 'postgres'
  /** A fresh, empty database's spec: sqlite ignores `dbName`; postgres creates it, or `<prefix>_<random>`. */
  spec: (dbName?: string) => Promise<string>
}

/**
 * `prefix` (e.g. "igw_paging15") names the sqlite temp directories (underscores as dashes) and the
 * postgres databases made without a name; `dir` is where the sqlite directories go (os.tmpdir()).
 */
export function dbEngines(prefix: string, pg: () => TestPostgres, opts: { dir?: string } = {}): DbEngine[] {
  return [
    { name: 'sqlite', spec: async () => `sqlite:${join(mkdtempSync(join(opts.dir ?? tmpdir(), `${prefix.replaceAll('_', '-')}-`)), 'igw.db')}` },
    { name: 'postgres', spec: (dbName) => pg().createDatabase(dbName ?? `${prefix}_${randomBytes(4).toString('hex')}`) },
  ]
}
