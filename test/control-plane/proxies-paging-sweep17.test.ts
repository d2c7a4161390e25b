// GET /v1/proxies pages like the other lists (`limit`, an opaque `cursor`, `next` and
// `Link: <…>; rel="next"`), on SQLite and a real PostgreSQL. It used to answer every proxy ever
// seen in one response, with no way to bound it.
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

const engines = dbEngines('igw_ppage17', () => pg)

interface Page {
  headVersion: number
  items: { id: string; connected: boolean }[]
  next?: string
}

describe.each(engines)('GET /v1/proxies paging on $name', ({ name: engine, spec: dbFor }) => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane({ db: await dbFor(`igw_ppage17_${engine}`) })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  it('limit and cursor page through every proxy by id; the Link header matches next', async () => {
    // 1100 proxies seen (more than one default page), ids whose order differs between collations.
    const now = Date.now()
    const ids: string[] = []
    for (let i = 0; i < 1100; i++) ids.push(`${['p-', 'p_', 'P', 'p.'][i % 4]}${String(i).padStart(4, '0')}`)
    for (let i = 0; i < ids.length; i += 100) {
      const batch = ids.slice(i, i + 100)
      await cp.db.query(`INSERT INTO proxies (id, hostname, boot_id, first_seen, last_seen, connected) VALUES ${batch.map((_id, j) => `($${j + 2}, NULL, NULL, $1, $1, 0)`).join(', ')}`, [now, ...batch])
    }
    // And one really connected, through the stream proxies use.
    const token = await cp.token({ sub: 'p', roles: ['proxy'] })
    const ac = new AbortController()
    const stream = await fetch(`${cp.url}/v1/stream?proxy=live-1&version=1`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
    expect(stream.status).toBe(200)
    try {
      const all = [...ids, 'live-1'].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))

      // No parameters: at most 1000 (every fleet that fitted before still fits) and the way on.
      const firstRes = await cp.api('/v1/proxies')
      const first = (await oa.check(firstRes, 'GET', '/v1/proxies')) as Page
      expect(first.items).toHaveLength(1000)
      expect(first.items.map((p) => p.id)).toEqual(all.slice(0, 1000))
      expect(first.next).toMatch(/^\/v1\/proxies\?limit=1000&cursor=[\w-]+$/)
      expect(firstRes.headers.get('link')).toBe(`<${first.next}>; rel="next"`)

      const seen: string[] = []
      let url: string | undefined = '/v1/proxies?limit=300'
      let pages = 0
      while (url !== undefined) {
        expect(++pages).toBeLessThan(10)
        const r = await cp.api(url)
        const body = (await oa.check(r, 'GET', '/v1/proxies')) as Page
        expect(r.status).toBe(200)
        expect(body.headVersion).toBe(cp.store.head()!.version)
        expect(r.headers.get('link')).toBe(body.next === undefined ? null : `<${body.next}>; rel="next"`)
        seen.push(...body.items.map((p) => p.id))
        if (body.items.some((p) => p.id === 'live-1')) expect(body.items.find((p) => p.id === 'live-1')!.connected).toBe(true)
        url = body.next
      }
      expect(pages).toBe(4)
      expect(seen).toEqual(all)

      // A page ending at the last proxy has no next page.
      const exact = (await (await cp.api(`/v1/proxies?limit=${all.length - 1000}&cursor=${Buffer.from(all[999]!).toString('base64url')}`)).json()) as Page
      expect(exact.items.map((p) => p.id)).toEqual(all.slice(1000))
      expect(exact.next).toBeUndefined()
    } finally {
      ac.abort()
    }

    for (const [q, problem] of [
      ['cursor=abc', /^cursor: expected the cursor of a previous page/],
      ['cursor=', /^cursor: expected the cursor of a previous page/],
      [`cursor=${Buffer.from('a b').toString('base64url')}`, /^cursor: expected the cursor of a previous page/],
      ['cursor=%2B%2F%3D', /^cursor: expected the cursor of a previous page/],
      ['limit=0', /^limit: expected an integer from 1 to 1000/],
      ['limit=1001', /^limit: expected an integer from 1 to 1000/],
    ] as const) {
      expect(await oa.check(await cp.api(`/v1/proxies?${q}`), 'GET', '/v1/proxies'), q).toMatchObject({ status: 400, problems: [expect.stringMatching(problem)] })
    }
  }, 120_000)
})
