// PUT /v1/tenants/{id}/quotas/{kind} takes QuotaInput, which the OpenAPI document publishes with
// additionalProperties: false. A body with more than limitPerDay was answered 200 and the rest
// dropped without a word: `{"limitPerDay": 5, "rate": 10}` set no rate, and the client was told
// its write succeeded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

describe('PUT /v1/tenants/{id}/quotas/{kind} with keys QuotaInput does not have', () => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane()
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  })
  afterAll(async () => {
    await cp?.close()
  })

  const put = (body: unknown) => cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: JSON.stringify(body) })
  const head = async () => ((await (await cp.api('/v1/config')).json()) as { version: number }).version
  const auditCount = async () => ((await (await cp.api('/v1/audit?limit=1000')).json()) as { items: unknown[] }).items.length

  it('is a 400 naming the keys, and nothing is committed or audited', async () => {
    const [version, entries] = [await head(), await auditCount()]
    const refused = await put({ limitPerDay: 5, rate: 10 })
    const body = (await oa.check(refused, 'PUT', '/v1/tenants/{id}/quotas/{kind}')) as { status: number; problems: string[] }
    expect(body.status).toBe(400)
    expect(body.problems).toHaveLength(1)
    expect(body.problems[0]).toMatch(/^\(body\): unknown key "rate": a quota takes only limitPerDay/)
    expect(await head()).toBe(version)
    expect(await auditCount()).toBe(entries)
    expect((await cp.api('/v1/tenants/acme/quotas/graphql')).status).toBe(404)

    // Several are named together; a huge count is named by its first ones and the total.
    const many = Object.fromEntries([['limitPerDay', 5], ...Array.from({ length: 12 }, (_, i) => [`k${i}`, i])])
    const two = (await (await put({ limitPerDay: 5, burst: 1, concurrency: 2 })).json()) as { problems: string[] }
    expect(two.problems[0]).toMatch(/^\(body\): unknown keys "burst", "concurrency": /)
    const lots = (await (await put(many)).json()) as { problems: string[] }
    expect(lots.problems[0]).toContain('"k9", … (12 in all)')
    expect(await head()).toBe(version)
  })

  it('limitPerDay alone is still taken', async () => {
    const ok = await put({ limitPerDay: 5 })
    expect(await oa.check(ok, 'PUT', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ tenant: 'acme', kind: 'graphql', limitPerDay: 5 })
  })
})
