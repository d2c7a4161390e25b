// The head poll (every 5 s, and at every NOTIFY) read the whole head row — the document twice, as
// stored and inside its signed envelope — and parsed both, even when nothing had changed: for a
// document of a few MB, megabytes per poll, on SQLite synchronously on the event loop. Now it
// reads the head's number and digest, and the row only when they moved.
//
// Real SQLite and PostgreSQL; the Db is wrapped only to count what the database returned.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDb, type Db } from '../../control-plane/db.ts'
import { generateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore } from '../../control-plane/store.ts'
import type { Doc } from '../../control-plane/resources.ts'
import { seedDocument } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

/** The same database, counting the characters of every value it answered with. */
function counting(db: Db): { db: Db; chars: () => number } {
  let n = 0
  const wrapped: Db = {
    kind: db.kind,
    query: async <T>(sql: string, params?: readonly (string | number | bigint | null)[]) => {
      const rows = await db.query<T>(sql, params)
      for (const r of rows as Record<string, unknown>[]) for (const v of Object.values(r)) n += String(v).length
      return rows
    },
    transaction: (fn) => db.transaction(fn),
    close: () => db.close(),
  }
  return { db: wrapped, chars: () => n }
}

/** A valid document of about 1.5 MB: many tenants. */
function bigDocument(): Doc {
  const seed = seedDocument()
  const tenants: Record<string, unknown> = { ...(seed.tenants as object) }
  for (let i = 0; i < 15_000; i++) tenants[`tenant-${'x'.repeat(80)}-${i}`] = { tier: 'gold' }
  return { ...seed, tenants }
}

const engines = dbEngines('igw_refresh', () => pg)

describe.each(engines)('head poll on $name', ({ spec }) => {
  it('an unchanged head is not read again; a commit elsewhere still is', async () => {
    const url = await spec('igw_refresh_cost')
    const key = generateSigningKey()
    const counted = counting(openDb(url))
    const a = new ConfigStore(counted.db, key)
    await a.init(bigDocument())
    const size = JSON.stringify(a.head()!.document).length
    expect(size).toBeGreaterThan(1_000_000)
    const b = new ConfigStore(openDb(url), key)
    await b.init()
    try {
      const versions: number[] = []
      a.on('version', (h) => versions.push(h.version))
      const before = counted.chars()
      for (let i = 0; i < 5; i++) await a.refresh()
      const polled = counted.chars() - before
      expect(polled, `5 polls of an unchanged head read ${polled} characters (the document is ${size})`).toBeLessThan(5_000)
      expect(versions).toEqual([])

      // Another instance commits: the next poll reads and emits it.
      await b.commit({ actor: 'bob', action: 'tenants.put', resource: 'tenants/initech', change: (h) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), initech: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }) })
      await a.refresh()
      expect(versions).toEqual([2])
      expect(a.head()!.digest).toBe(b.head()!.digest)
    } finally {
      await a.db.close()
      await b.db.close()
    }
  }, 120_000)
})
