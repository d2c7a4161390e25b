// GET /v1/audit pages by bytes as well as by `limit`, on SQLite and on a real PostgreSQL. An entry
// holds the value before and after the change and their diff — for a whole-document write, the
// document several times — and a page was `limit` entries whatever their size: 100 entries of a
// 3 MB document were read at once and the answer died building its text (a 500 after ~30 s and
// 3 GB of memory), so the log could not be read at all. Now a page stops at 32 MiB of entry text
// (at least one entry) and links the next one, like a page cut by `limit`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AUDIT_LIST_PAGE_BYTES } from '../../control-plane/audit.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { Conformance } from './openapi-conformance.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

const engines = dbEngines('igw_audit_bytes31c', () => pg)

interface Entry {
  seq: number
  resource: string
  before: unknown
  after: unknown
  diff: unknown[]
}

/** The entry text a page is bounded by, as the database measures it (UTF-8 of before, after and diff). */
const textBytes = (e: Entry) => Buffer.byteLength(JSON.stringify(e.before ?? '')) + Buffer.byteLength(JSON.stringify(e.after ?? '')) + Buffer.byteLength(JSON.stringify(e.diff))

describe.each(engines)('GET /v1/audit over large entries on $name', ({ name: engine, spec: dbFor }) => {
  let cp: TestControlPlane
  let oa: Conformance
  let all: number
  beforeAll(async () => {
    cp = await startTestControlPlane({ db: await dbFor(`igw_audit_bytes31c_${engine}`) })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
    // Ten writes of a tenant whose display name is 1 MiB: each entry holds ~4 MiB (before, after,
    // and both again in the diff), ~38 MiB in all, beyond one page's budget.
    const big = 'x'.repeat(1024 * 1024)
    for (let i = 0; i < 10; i++) {
      const r = await cp.api('/v1/tenants/big', { method: 'PUT', body: JSON.stringify({ tier: 'gold', displayName: `${big}${i}` }) })
      expect(r.status).toBeLessThan(300)
    }
    await cp.api('/v1/tenants/small', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })
    all = cp.store.head()!.version // one entry per version, the seed's included
  }, 120_000)
  afterAll(async () => {
    await cp?.close()
  })

  /** Every page from `first`, following `next` (checked against the Link header and the OpenAPI document). */
  async function walk(first: string): Promise<Entry[][]> {
    const pages: Entry[][] = []
    let url: string | undefined = first
    while (url !== undefined) {
      expect(pages.length, 'too many pages').toBeLessThan(20)
      const r = await cp.api(url)
      expect(r.status).toBe(200)
      const link = r.headers.get('link')
      const body = (await oa.check(r, 'GET', '/v1/audit')) as { items: Entry[]; next?: string }
      if (body.next === undefined) expect(link).toBeNull()
      else expect(link).toBe(`<${body.next}>; rel="next"`)
      pages.push(body.items)
      url = body.next
    }
    return pages
  }

  it('a page stops at the byte budget and links the next; walking the links gives every entry once, in order', async () => {
    const pages = await walk('/v1/audit?limit=1000')
    expect(pages.length).toBeGreaterThan(1)
    for (const p of pages) {
      expect(p.length).toBeGreaterThan(0)
      if (p.length > 1) expect(p.reduce((n, e) => n + textBytes(e), 0)).toBeLessThanOrEqual(AUDIT_LIST_PAGE_BYTES)
    }
    const seqs = pages.flat().map((e) => e.seq)
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_v, i) => i + 1))
    expect(seqs).toHaveLength(all)
    expect(pages.flat().filter((e) => e.resource === 'tenants/small')).toHaveLength(1)
  }, 120_000)

  it('so does a page of one resource (the default limit, 100)', async () => {
    const pages = await walk('/v1/audit?resource=tenants/big')
    expect(pages.length).toBeGreaterThan(1)
    expect(pages.flat().map((e) => e.resource)).toEqual(Array(10).fill('tenants/big'))
    expect(new Set(pages.flat().map((e) => e.seq)).size).toBe(10)
  }, 120_000)
})
