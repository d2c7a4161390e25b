// PUT /v1/tenants/{id}/quotas/{kind} answered 200 whether it created the quota or replaced it;
// every other create path (a collection's item, a route's filter) answers 201. Now 201 with
// Location when the quota was not set, 200 when it replaced one (sweep 24f).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

describe('PUT of a quota not set before (sweep 24f)', () => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane()
    oa = new Conformance(cp.openapi)
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('answers 201 with Location when it creates the quota, 200 when it replaces it', async () => {
    const path = '/v1/tenants/acme/quotas/embeddings'
    expect((await cp.api(path)).status).toBe(404)
    const created = await cp.api(path, { method: 'PUT', body: JSON.stringify({ limitPerDay: 10 }) })
    expect(created.status).toBe(201)
    expect(created.headers.get('location')).toBe(path)
    expect(await oa.check(created, 'PUT', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ tenant: 'acme', kind: 'embeddings', limitPerDay: 10 })

    const replaced = await cp.api(path, { method: 'PUT', body: JSON.stringify({ limitPerDay: 11 }) })
    expect(replaced.status).toBe(200)
    expect(replaced.headers.get('location')).toBeNull()
    expect(await oa.check(replaced, 'PUT', '/v1/tenants/{id}/quotas/{kind}')).toMatchObject({ limitPerDay: 11 })

    // The published document says so.
    const put = (cp.openapi as { paths: Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown> }> }>> }).paths['/v1/tenants/{id}/quotas/{kind}']!.put!
    expect(put.responses['201']?.headers?.Location).toBeDefined()

    // Deleted, it is created again by the next PUT.
    expect((await cp.api(path, { method: 'DELETE' })).status).toBe(200)
    expect((await cp.api(path, { method: 'PUT', body: JSON.stringify({ limitPerDay: 12 }) })).status).toBe(201)
  })

  it('a collection item created by PUT carries Location too', async () => {
    const created = await cp.api('/v1/upstreams/sweep24f', { method: 'PUT', body: JSON.stringify({ url: 'http://127.0.0.1:9' }) })
    expect(created.status).toBe(201)
    expect(created.headers.get('location')).toBe('/v1/upstreams/sweep24f')
    await created.body?.cancel()
  })
})
