// A burst of commits on one control plane instance reaches the others as a burst of NOTIFYs (and a
// poll may land among them): each called ConfigStore.refresh(), and every one of them read and
// parsed the whole head row — the document twice — at the same time: thirty commits of a 4 MB
// document, thirty copies in memory at once. Now refreshes run one at a time with at most one
// queued, and a refresh asked for after a commit still sees that commit.
//
// Real SQLite and PostgreSQL; the Db is wrapped only to count the reads of whole head rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDb, type Db } from '../../control-plane/db.ts'
import { generateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore } from '../../control-plane/store.ts'
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

/** The same database, counting the statements that read whole version rows; `fail` makes reads throw. */
function counting(db: Db): { db: Db; rowReads: () => number; fail: boolean } {
  let n = 0
  const out = { db: undefined as unknown as Db, rowReads: () => n, fail: false }
  out.db = {
    kind: db.kind,
    query: async <T>(sql: string, params?: readonly (string | number | bigint | null)[]) => {
      if (out.fail) throw new Error('read failed')
      if (sql.startsWith('SELECT * FROM config_versions')) n++
      return db.query<T>(sql, params)
    },
    transaction: (fn) => db.transaction(fn),
    close: () => db.close(),
  }
  return out
}

const engines = dbEngines('igw_burst', () => pg)

const addTenant = (name: string) => ({
  actor: 'bob',
  action: 'tenants.put',
  resource: `tenants/${name}`,
  change: (h: { document: Record<string, unknown> }) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), [name]: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }),
})

describe.each(engines)('refreshes on $name', ({ spec }) => {
  it('a burst of refreshes reads the head row at most twice, and a refresh after a commit sees it', async () => {
    const url = await spec('igw_refresh_burst')
    const key = generateSigningKey()
    const a = new ConfigStore(openDb(url), key)
    await a.init(seedDocument())
    const counted = counting(openDb(url))
    const b = new ConfigStore(counted.db, key)
    await b.init()
    try {
      for (let i = 0; i < 30; i++) await a.commit(addTenant(`t${i}`))
      const versions: number[] = []
      b.on('version', (h) => versions.push(h.version))
      const before = counted.rowReads()
      // What thirty NOTIFYs arriving together do.
      await Promise.all(Array.from({ length: 30 }, () => b.refresh()))
      expect(counted.rowReads() - before).toBeLessThanOrEqual(2)
      expect(b.head()!.version).toBe(a.head()!.version)
      expect(versions).toEqual([a.head()!.version])

      // A refresh asked for while another is reading, after a commit, is not answered by that read.
      const inFlight = b.refresh()
      await a.commit(addTenant('late'))
      await Promise.all([inFlight, b.refresh()])
      expect(b.head()!.version).toBe(a.head()!.version)
      expect(b.head()!.digest).toBe(a.head()!.digest)
      // A failed read fails its callers and does not wedge the next refreshes.
      counted.fail = true
      const failed = await Promise.allSettled([b.refresh(), b.refresh()])
      expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected'])
      counted.fail = false
      await a.commit(addTenant('after-failure'))
      await b.refresh()
      expect(b.head()!.version).toBe(a.head()!.version)
    } finally {
      await a.db.close()
      await b.db.close()
    }
  })
})
