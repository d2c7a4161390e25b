// Conditional writes (RFC 9110 §13.1.2). `If-None-Match: *` on a section not set yet answered 412
// "the resource exists" (a missing section was given the ETag of null and taken as existing), so
// "create only if absent" could never succeed there; and `If-None-Match: "<etag>"` on a write was
// ignored, so a write conditioned on "not this representation" went through anyway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

describe('If-None-Match on writes', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('a section not set yet: If-None-Match * creates it once; the second time is a 412', async () => {
    const body = JSON.stringify({ graphql: { rate: 10, burst: 20 } })
    const head = await cp.api('/v1/quota-defaults')
    const present = ((await head.json()) as { config?: unknown }).config
    if (present !== undefined) {
      // the seed set it: take it away first, so the section is absent
      const doc = (await (await cp.api('/v1/config')).json()) as { config: { quotas?: { defaults?: unknown } } }
      delete doc.config.quotas!.defaults
      expect((await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify(doc.config) })).status).toBeLessThan(300)
    }
    const first = await cp.api('/v1/quota-defaults', { method: 'PUT', body, headers: { 'if-none-match': '*' } })
    expect(first.status, await first.clone().text()).toBe(200)
    const second = await cp.api('/v1/quota-defaults', { method: 'PUT', body, headers: { 'if-none-match': '*' } })
    expect(second.status).toBe(412)
  })

  it('a tenant: If-None-Match with its current ETag (strong or weak) is a 412; another ETag writes; a malformed list is a 400', async () => {
    expect((await cp.api('/v1/tenants/inm', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
    const etag = (await cp.api('/v1/tenants/inm')).headers.get('etag')!
    expect(etag).toBeTruthy()
    const bronze = JSON.stringify({ tier: 'bronze' })
    expect((await cp.api('/v1/tenants/inm', { method: 'PUT', body: bronze, headers: { 'if-none-match': etag } })).status).toBe(412)
    expect((await cp.api('/v1/tenants/inm', { method: 'PUT', body: bronze, headers: { 'if-none-match': `"other", W/${etag}` } })).status).toBe(412)
    expect(JSON.stringify(await (await cp.api('/v1/tenants/inm')).json())).toContain('"tier":"gold"') // neither refused write landed
    const ok = await cp.api('/v1/tenants/inm', { method: 'PUT', body: bronze, headers: { 'if-none-match': '"not-the-current-one"' } })
    expect(ok.status).toBe(200)
    expect((await cp.api('/v1/tenants/inm', { method: 'PUT', body: bronze, headers: { 'if-none-match': 'nonsense' } })).status).toBe(400)
  })
})
