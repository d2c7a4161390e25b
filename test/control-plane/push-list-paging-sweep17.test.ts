// PushHub.list pages in SQL: `{ after, limit }` reads only one page of the proxies table, in code
// unit (byte) order — the order GET /v1/proxies' cursor compares with — also on a PostgreSQL
// database whose collation is a locale's (ICU here), where "ORDER BY id" alone orders "p-1",
// "p_1", "P1" and "p.1" differently. It used to read every row for every page.
import { spawnSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

/** A database whose default collation is a locale's (ICU "en-US"), as a production PostgreSQL often has. */
function localeDatabase(name: string): string {
  const r = spawnSync('createdb', ['-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres', '--template=template0', '--locale-provider=icu', '--icu-locale=en-US', name], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`createdb ${name} failed: ${r.stderr}`)
  return `postgres://postgres@127.0.0.1:${pg.port}/${name}`
}

const engines: [string, (name: string) => Promise<string>][] = [
  ['sqlite', async () => `sqlite:${join(mkdtempSync(join(tmpdir(), 'igw-plist17-')), 'igw.db')}`],
  ['postgres (ICU locale collation)', async (name) => localeDatabase(name)],
]

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

describe.each(engines)('PushHub.list({after, limit}) on %s', (engine, dbFor) => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane({ db: await dbFor(`igw_plist17_${engine.startsWith('sqlite') ? 'sqlite' : 'pg'}`) })
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  it('pages in byte order with the limit and the exclusive cursor applied by the database', async () => {
    const ids: string[] = []
    for (let i = 0; i < 250; i++) ids.push(`${['p-', 'p_', 'P', 'p.', 'p:', 'p@'][i % 6]}${String(i).padStart(3, '0')}`)
    const now = Date.now()
    for (let i = 0; i < ids.length; i += 100) {
      const batch = ids.slice(i, i + 100)
      await cp.db.query(`INSERT INTO proxies (id, hostname, boot_id, first_seen, last_seen, connected) VALUES ${batch.map((_id, j) => `($${j + 2}, NULL, NULL, $1, $1, 0)`).join(', ')}`, [now, ...batch])
    }
    const all = [...ids].sort(byCodeUnit)

    // Without options: every proxy, in the same byte order.
    expect((await cp.hub.list()).map((p) => p.id)).toEqual(all)

    const seen: string[] = []
    let after: string | undefined
    for (let pages = 0; pages < 10; pages++) {
      const page = await cp.hub.list({ ...(after === undefined ? {} : { after }), limit: 40 })
      expect(page.length).toBeLessThanOrEqual(40)
      seen.push(...page.map((p) => p.id))
      if (page.length < 40) break
      after = page.at(-1)!.id
    }
    expect(seen).toEqual(all)

    // The cursor is exclusive, and need not be an existing id.
    expect((await cp.hub.list({ after: all[9]!, limit: 3 })).map((p) => p.id)).toEqual(all.slice(10, 13))
    expect((await cp.hub.list({ after: 'p-0005', limit: 2 })).map((p) => p.id)).toEqual(all.filter((id) => id > 'p-0005').slice(0, 2))
    expect(await cp.hub.list({ after: all.at(-1)!, limit: 5 })).toEqual([])
  }, 60_000)
})
