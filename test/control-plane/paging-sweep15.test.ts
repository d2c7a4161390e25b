// GET /v1/config/versions and GET /v1/alerts page, on SQLite and on a real PostgreSQL: a bounded
// page (`limit`), and the next one from `next` in the body or the `Link: <…>; rel="next"` header
// (`before=<version>`, an opaque alert `cursor`). They used to answer only the newest 50 versions
// (at most 1000) and the newest 100 alerts: older ones could not be read at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
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

const engines = dbEngines('igw_paging15', () => pg)

interface Page<T> {
  items: T[]
  next?: string
}

describe.each(engines)('list paging on $name', ({ name: engine, spec: dbFor }) => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane({ db: await dbFor(`igw_paging15_${engine}`) })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  /** Every page from `first`, following `next`; checks each against the OpenAPI document and the Link header against `next`. */
  async function walk<T>(first: string, template: string, maxPages = 50): Promise<T[][]> {
    const pages: T[][] = []
    let url: string | undefined = first
    while (url !== undefined) {
      expect(pages.length, 'too many pages').toBeLessThan(maxPages)
      const r = await cp.api(url)
      const link = r.headers.get('link')
      const body = (await oa.check(r, 'GET', template)) as Page<T>
      expect(r.status).toBe(200)
      if (body.next === undefined) expect(link).toBeNull()
      else expect(link).toBe(`<${body.next}>; rel="next"`)
      pages.push(body.items)
      url = body.next
    }
    return pages
  }

  it('GET /v1/config/versions: limit and before page through every version, newest first', async () => {
    for (let i = 0; i < 60; i++) {
      const r = await cp.api(`/v1/tenants/t${i}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
      expect(r.status).toBe(201)
    }
    const head = cp.store.head()!.version
    expect(head).toBe(61)
    const all = Array.from({ length: head }, (_v, i) => head - i)

    // No parameters: the same first page as before (the newest 50), now with the way on.
    const first = (await oa.check(await cp.api('/v1/config/versions'), 'GET', '/v1/config/versions')) as Page<{ version: number }>
    expect(first.items.map((v) => v.version)).toEqual(all.slice(0, 50))
    expect(first.next).toBe('/v1/config/versions?limit=50&before=12')

    const pages = await walk<{ version: number }>('/v1/config/versions?limit=25', '/v1/config/versions')
    expect(pages.map((p) => p.length)).toEqual([25, 25, 11])
    expect(pages.flat().map((v) => v.version)).toEqual(all)

    // A page that ends exactly at the oldest version has no next page.
    const exact = (await (await cp.api(`/v1/config/versions?limit=${head}`)).json()) as Page<unknown>
    expect(exact.items).toHaveLength(head)
    expect(exact.next).toBeUndefined()
    expect(((await (await cp.api('/v1/config/versions?before=3')).json()) as Page<{ version: number }>).items.map((v) => v.version)).toEqual([2, 1])
    expect(((await (await cp.api('/v1/config/versions?before=1')).json()) as Page<unknown>).items).toEqual([])

    for (const bad of ['0', '-1', 'abc', '1.5', '', '99999999999999999999']) {
      const r = await cp.api(`/v1/config/versions?before=${encodeURIComponent(bad)}`)
      expect(await oa.check(r, 'GET', '/v1/config/versions'), bad).toMatchObject({ status: 400, problems: [expect.stringMatching(/^before: expected an integer/)] })
    }
  }, 120_000)

  it('GET /v1/alerts: limit and cursor page through every alert, newest first, keeping tenant and since', async () => {
    // 250 alerts, many sharing a time (one usage report raises several at once), two tenants.
    const t0 = Date.now() - 3_600_000
    const rows: [string, number, string][] = []
    for (let i = 0; i < 250; i++) rows.push([`paging-${String(i).padStart(3, '0')}`, t0 + Math.floor(i / 7) * 1000, i % 5 === 0 ? 'globex' : 'acme'])
    for (const [id, at, tenant] of rows) {
      await cp.db.query('INSERT INTO alerts (id, at, tenant, kind, severity, message, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)', [id, at, tenant, 'anomaly.volume', 'warning', `alert ${id}`, '{}'])
    }
    const order = [...rows].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map((r) => r[0])

    // No parameters: the newest 100, as before, and the way on.
    const first = (await oa.check(await cp.api('/v1/alerts'), 'GET', '/v1/alerts')) as Page<{ id: string }>
    expect(first.items.map((a) => a.id)).toEqual(order.slice(0, 100))
    expect(first.next).toMatch(/^\/v1\/alerts\?limit=100&cursor=[\w-]+$/)

    const pages = await walk<{ id: string }>('/v1/alerts?limit=40', '/v1/alerts')
    expect(pages.map((p) => p.length)).toEqual([40, 40, 40, 40, 40, 40, 10])
    expect(pages.flat().map((a) => a.id)).toEqual(order)

    // The filters ride along in the next link.
    const since = new Date(t0 + 10_000).toISOString()
    const acme = await walk<{ id: string; tenant: string }>(`/v1/alerts?tenant=acme&since=${since}&limit=30`, '/v1/alerts')
    const want = rows.filter((r) => r[2] === 'acme' && r[1] >= t0 + 10_000).map((r) => r[0])
    expect(acme.flat().map((a) => a.id).sort()).toEqual(want.sort())
    expect(acme.flat().every((a) => a.tenant === 'acme')).toBe(true)
    expect(acme.length).toBe(Math.ceil(want.length / 30))

    const bad: [string, RegExp][] = [
      ['cursor=abc', /^cursor: expected the cursor of a previous page/],
      ['cursor=', /^cursor: expected the cursor of a previous page/],
      [`cursor=${Buffer.from('[-1,"x"]').toString('base64url')}`, /^cursor: expected the cursor of a previous page/],
      [`cursor=${Buffer.from('{"at":1}').toString('base64url')}`, /^cursor: expected the cursor of a previous page/],
      ['cursor=%2B%2F%3D', /^cursor: expected the cursor of a previous page/],
      ['limit=0', /^limit: expected an integer from 1 to 1000/],
      ['limit=1001', /^limit: expected an integer from 1 to 1000/],
      ['limit=2.5', /^limit: expected an integer from 1 to 1000/],
    ]
    for (const [q, problem] of bad) {
      expect(await oa.check(await cp.api(`/v1/alerts?${q}`), 'GET', '/v1/alerts'), q).toMatchObject({ status: 400, problems: [expect.stringMatching(problem)] })
    }
  }, 120_000)
})
