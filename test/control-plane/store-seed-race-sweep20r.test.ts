// Two control plane instances starting together on one empty database, both with a seed: each saw
// no head and committed its seed. The one that came second either
//  - found the same document already there (no new version), and was left holding NO head until
//    its next poll: GET /v1/config answered 503 "no config yet" and a proxy that connected to it
//    was told there is no config at all (it booted without one); or
//  - committed its seed over what was there — undoing an admin's change made on the first
//    instance meanwhile (a version that was nobody's edit).
// The seed is now decided under the write lock (only into an empty store), and an unchanged commit
// adopts the newer head it read. Real SQLite and PostgreSQL; instance B's Db is wrapped only to let
// instance A run between B's look at the empty store and B's seed commit.
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

/** `db`, running `between` once, right after the first read of the head outside a transaction (init's look at the store). */
function pausedAfterHeadRead(db: Db, between: () => Promise<void>): Db {
  let done = false
  return {
    kind: db.kind,
    query: async <T>(sql: string, params?: readonly (string | number | bigint | null)[]) => {
      const rows = await db.query<T>(sql, params)
      if (!done && sql.startsWith('SELECT * FROM config_versions ORDER BY version DESC')) {
        done = true
        await between()
      }
      return rows
    },
    transaction: (fn) => db.transaction(fn),
    close: () => db.close(),
  }
}

const engines = dbEngines('igw_seed', () => pg)

describe.each(engines)('two instances seeding one empty $name database', ({ spec }) => {
  it('the second one, finding the same seed committed, holds that head', async () => {
    const url = await spec('igw_seed_same')
    const key = generateSigningKey()
    const a = new ConfigStore(openDb(url), key)
    const b = new ConfigStore(pausedAfterHeadRead(openDb(url), () => a.init(seedDocument())), key)
    try {
      await b.init(seedDocument())
      expect(a.head()?.version).toBe(1)
      expect(b.head()?.version).toBe(1)
      expect(b.head()?.digest).toBe(a.head()!.digest)
      expect((await b.versions()).map((v) => v.version)).toEqual([1])
    } finally {
      await a.db.close()
      await b.db.close()
    }
  })

  it("the second one's seed does not undo a change committed on the first one meanwhile", async () => {
    const url = await spec('igw_seed_other')
    const key = generateSigningKey()
    const a = new ConfigStore(openDb(url), key)
    const b = new ConfigStore(
      pausedAfterHeadRead(openDb(url), async () => {
        await a.init(seedDocument())
        await a.commit({ actor: 'alice', action: 'tenants.put', resource: 'tenants/initech', change: (h) => ({ document: { ...h.document, tenants: { ...(h.document.tenants as object), initech: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }) })
      }),
      key,
    )
    try {
      await b.init(seedDocument())
      expect((await b.versions()).map((v) => v.author)).toEqual(['alice', 'system'])
      expect(b.head()?.version).toBe(2)
      expect((b.head()!.document as Doc & { tenants: Record<string, unknown> }).tenants.initech).toEqual({ tier: 'gold' })
    } finally {
      await a.db.close()
      await b.db.close()
    }
  })
})
