// REST semantics of the control plane (sweep 20c):
// 1. A body declared in another charset (`; charset=iso-8859-1`) or holding bytes that are not
//    UTF-8 was decoded leniently: "café" in Latin-1 was stored, pushed and audited as "caf\uFFFD"
//    with a 201. Now a 415 (charset) or a 400 (bad bytes), and nothing is committed or audited.
// 2. PUT /v1/config with If-Match on a store that has no config yet skipped the precondition and
//    committed: a write conditioned on a document that never existed here went through. Now 412.
// 3. A GET that sends an ETag ignored If-None-Match holding it: a poller always got the whole
//    document again. Now 304 without a body (HEAD too); another tag still gets the 200.
// 4. GET /v1/audit gave no sign of a next page (every other list has `next` and a Link header):
//    a full page looked like the end. Now `next` / Link on both engines, and the pages follow
//    each other without gap or repeat, with the resource filter kept.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { Conformance } from './openapi-conformance.ts'

const json = (v: unknown) => JSON.stringify(v)

describe('request bodies and preconditions (SQLite)', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane({ seed: null })
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('If-Match on a store with no config yet is a 412 and commits nothing; If-None-Match: * creates', async () => {
    const refused = await cp.api('/v1/config', { method: 'PUT', body: json(seedDocument()), headers: { 'if-match': '"from-another-store"' } })
    expect(refused.status).toBe(412)
    expect(cp.store.head()).toBeUndefined()
    expect(((await (await cp.api('/v1/audit')).json()) as { items: unknown[] }).items).toEqual([])
    const created = await cp.api('/v1/config', { method: 'PUT', body: json(seedDocument()), headers: { 'if-none-match': '*' } })
    expect(created.status).toBe(200)
    expect(cp.store.head()?.version).toBe(1)
  })

  it('a body in another charset is a 415, bytes that are not UTF-8 a 400; neither is stored nor audited', async () => {
    if (cp.store.head() === undefined) await cp.api('/v1/config', { method: 'PUT', body: json(seedDocument()) })
    const before = cp.store.head()!.version
    const auditBefore = ((await (await cp.api('/v1/audit')).json()) as { items: unknown[] }).items.length
    const latin1 = Buffer.from('{"displayName":"caf\xe9"}', 'latin1')
    const declared = await cp.api('/v1/tenants/l1', { method: 'PUT', body: latin1, headers: { 'content-type': 'application/json; charset=ISO-8859-1' } })
    expect(declared.status).toBe(415)
    expect(((await declared.json()) as { detail: string }).detail).toContain('ISO-8859-1')
    const undeclared = await cp.api('/v1/tenants/l1', { method: 'PUT', body: latin1 })
    expect(undeclared.status).toBe(400)
    expect(((await undeclared.json()) as { detail: string }).detail).toMatch(/UTF-8/)
    expect((await cp.api('/v1/tenants/l1')).status).toBe(404)
    expect(cp.store.head()!.version).toBe(before)
    expect(((await (await cp.api('/v1/audit')).json()) as { items: unknown[] }).items.length).toBe(auditBefore)
    // UTF-8, declared or not, is taken as it was sent.
    for (const type of ['application/json; charset=utf-8', 'application/json;charset="UTF-8"', 'application/json']) {
      const ok = await cp.api('/v1/tenants/l1', { method: 'PUT', body: Buffer.from(json({ displayName: 'café' })), headers: { 'content-type': type } })
      expect(ok.status, type).toBeLessThan(300)
      expect(((await ok.json()) as { config: { displayName: string } }).config.displayName).toBe('café')
    }
  })

  it('a GET whose If-None-Match holds the current ETag is answered 304 without a body', async () => {
    if (cp.store.head() === undefined) await cp.api('/v1/config', { method: 'PUT', body: json(seedDocument()) })
    const oa = new Conformance(cp.openapi)
    const templates = { '/v1/config': '/v1/config', '/v1/tenants/acme': '/v1/tenants/{id}', '/v1/qos': '/v1/qos', '/v1/routes/graphql/filters/tenant': '/v1/routes/{route}/filters/{filter}' }
    for (const [path, template] of Object.entries(templates)) {
      const first = await cp.api(path)
      expect(first.status, path).toBe(200)
      const etag = first.headers.get('etag')!
      for (const inm of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
        const again = await cp.api(path, { headers: { 'if-none-match': inm } })
        expect([path, inm, again.status]).toEqual([path, inm, 304])
        expect(again.headers.get('etag')).toBe(etag)
        // documented, and without a body
        expect(await oa.check(again, 'GET', template)).toBeUndefined()
      }
      expect((await cp.api(path, { method: 'HEAD', headers: { 'if-none-match': etag } })).status).toBe(304)
      const changed = await cp.api(path, { headers: { 'if-none-match': '"not-the-current-one"' } })
      expect(changed.status).toBe(200)
      expect(changed.headers.get('etag')).toBe(etag)
    }
    // A write's If-None-Match is still its precondition, never a 304.
    const etag = (await cp.api('/v1/tenants/acme')).headers.get('etag')!
    expect((await cp.api('/v1/tenants/acme', { method: 'PUT', body: json({ tier: 'gold' }), headers: { 'if-none-match': etag } })).status).toBe(412)
  })
})

for (const engine of ['sqlite', 'postgres'] as const) {
  describe(`GET /v1/audit pages (${engine})`, () => {
    let pg: TestPostgres | undefined
    let cp: TestControlPlane
    beforeAll(async () => {
      if (engine === 'postgres') pg = await startPostgres()
      cp = await startTestControlPlane(pg ? { db: await pg.createDatabase('audit_pages_20c') } : {})
    }, 120_000)
    afterAll(async () => {
      await cp?.close()
      await pg?.close()
    })

    it('a page that is not the last links the next one; walking the links gives every entry once', async () => {
      const oa = new Conformance(cp.openapi)
      // seed + 5 tenant writes + 2 upstream writes = 8 entries, 5 of them on tenants/t1..t5.
      for (let i = 1; i <= 5; i++) expect((await cp.api(`/v1/tenants/t${i}`, { method: 'PUT', body: json({ tier: 'gold' }) })).status).toBe(201)
      for (const u of ['u1', 'u2']) expect((await cp.api(`/v1/upstreams/${u}`, { method: 'PUT', body: json({ url: 'http://127.0.0.1:9' }) })).status).toBe(201)
      type Page = { items: { seq: number; resource: string }[]; next?: string }
      const walk = async (first: string) => {
        const seen: number[] = []
        let url: string | undefined = first
        let pages = 0
        while (url !== undefined && pages++ < 20) {
          const r = await cp.api(url)
          expect(r.status).toBe(200)
          const link = r.headers.get('link') ?? undefined
          const body = (await oa.check(r, 'GET', '/v1/audit')) as Page
          seen.push(...body.items.map((e) => e.seq))
          expect(link).toBe(body.next === undefined ? undefined : `<${body.next}>; rel="next"`)
          url = body.next
        }
        return { seen, pages }
      }
      const all = await walk('/v1/audit?limit=3')
      expect(all.seen).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      expect(all.pages).toBe(3)
      // A last page exactly full has no next link (no link to an empty page).
      const exact = (await (await cp.api('/v1/audit?limit=8')).json()) as Page
      expect(exact.items.length).toBe(8)
      expect(exact.next).toBeUndefined()
      // The filter travels with the link.
      const t2 = (await (await cp.api('/v1/audit?resource=tenants/t2&limit=1')).json()) as Page
      expect(t2.items.map((e) => e.resource)).toEqual(['tenants/t2'])
      expect(t2.next).toBeUndefined()
      const up = await walk('/v1/audit?resource=upstreams/u1&limit=1')
      expect(up.seen).toEqual([7])
    })
  })
}

describe('GET /v1/audit at the largest page (SQLite)', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('limit=1000 over more than 1000 entries links the next page', { timeout: 30_000 }, async () => {
    // The seed's entry + 1000: one more than the largest page.
    for (let i = 0; i < 1000; i++) await cp.store.audit({ actor: 'filler', action: 'test.fill', resource: `fill/${i}` })
    const first = (await (await cp.api('/v1/audit?limit=1000')).json()) as { items: { seq: number }[]; next?: string }
    expect(first.items.length).toBe(1000)
    expect(first.next).toBe('/v1/audit?after=1000&limit=1000')
    const rest = (await (await cp.api(first.next!)).json()) as { items: { seq: number }[]; next?: string }
    expect(rest.items.map((e) => e.seq)).toEqual([1001])
    expect(rest.next).toBeUndefined()
  })
})
