// HEAD is GET without the body (RFC 9110 §9.3.2). The REST routes answer it so; the admin
// GraphQL endpoint, which takes GET queries, answered every HEAD with 405 (a monitor's HEAD probe
// of /graphql, or `curl -I`, reported the endpoint broken).
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
let admin: string
beforeAll(async () => {
  cp = await startTestControlPlane()
  admin = await cp.token({ sub: 'ops', roles: ['admin'] })
})
afterAll(async () => {
  await cp?.close()
})

async function call(method: 'GET' | 'HEAD' | 'PUT', path: string, token = admin) {
  const r = await request(`${cp.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'x-request-id': 'probe-1' } })
  const body = await r.body.text()
  return { status: r.statusCode, headers: r.headers, body }
}

describe('HEAD /graphql', () => {
  it('is answered as the GET it stands for: same status and content type, no body', async () => {
    const q = `/graphql?query=${encodeURIComponent('{ quotas(tenant: "acme") { kind } }')}`
    const get = await call('GET', q)
    expect(get.status).toBe(200)
    expect(JSON.parse(get.body)).toEqual({ data: { quotas: [] } })
    const head = await call('HEAD', q)
    expect(head.status).toBe(200)
    expect(head.body).toBe('')
    expect(head.headers['content-type']).toBe(get.headers['content-type'])
    expect(head.headers['x-request-id']).toBe('probe-1')
    // Counted as the HEAD it was.
    await expect
      .poll(async () => metricSample(await (await fetch(`${cp.metricsUrl}/metrics`)).text(), 'igw_control_plane_requests_total', { route: '/graphql', method: 'HEAD', status: '200' }), { timeout: 10_000 })
      .toBe(1)
  })

  it('a mutation over HEAD is refused as over GET (no change made)', async () => {
    const q = `/graphql?query=${encodeURIComponent('mutation { setQuota(kind: "graphql", limitPerDay: 5, tenant: "acme") { kind } }')}`
    const get = await call('GET', q)
    const head = await call('HEAD', q)
    expect(head.status).toBe(get.status)
    expect(head.status).toBe(405)
    expect(head.body).toBe('')
    const quotas = (await (await cp.api('/v1/tenants/acme/quotas')).json()) as { items: unknown[] }
    expect(quotas.items).toEqual([])
  })

  it('without a token: 401 as for GET', async () => {
    const r = await request(`${cp.url}/graphql?query=%7B__typename%7D`, { method: 'HEAD' })
    await r.body.dump()
    expect(r.statusCode).toBe(401)
  })

  it('REST routes answer HEAD as GET too (unchanged)', async () => {
    const get = await call('GET', '/v1/tenants/acme')
    const head = await call('HEAD', '/v1/tenants/acme')
    expect(head.status).toBe(200)
    expect(head.body).toBe('')
    expect(head.headers.etag).toBe(get.headers.etag)
    expect(head.headers['content-length']).toBe(get.headers['content-length'])
  })

  it('a method /graphql does not take is a 405 naming what it does take', async () => {
    const put = await call('PUT', '/graphql')
    expect(put.status).toBe(405)
    expect(put.headers.allow).toBe('GET, HEAD, POST')
  })
})
