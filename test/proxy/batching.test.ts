// Query batching (a JSON array of GraphQL requests in one POST): off by default, as in Apollo
// Router and Hive Gateway, because no filter sees inside a batch. Enabled on a route, a batch is
// bounded in operations and costs one unit per operation (it used to cost 1 whatever it held).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('query batching', () => {
  let backend: RawBackend
  let proxy: TestProxy
  let seen = 0

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        seen++
        const ops = JSON.parse(Buffer.concat(chunks).toString()) as unknown[]
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(ops.map(() => ({ data: { hello: 'hi' } }))))
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      quotas: { defaults: { graphql: { rate: 0.001, burst: 5 } } },
      routes: [
        { name: 'plain', match: { pathPrefix: '/plain' }, upstream: backend.url },
        { name: 'batched', match: { pathPrefix: '/batched' }, upstream: backend.url, batching: { enabled: true, maxOperations: 3 }, filters: [{ name: 'tenant' }, { name: 'quota' }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const post = async (path: string, ops: number) => {
    const res = await request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify(Array.from({ length: ops }, () => ({ query: '{ hello }' }))) })
    return { status: res.statusCode, json: (await res.body.json()) as { errors?: { message: string; extensions: { code: string } }[] } | unknown[] }
  }
  const error = (j: unknown) => (j as { errors: { message: string; extensions: { code: string } }[] }).errors[0]!

  it('is refused with 400 on a route that does not enable it, before the upstream', async () => {
    const before = seen
    const r = await post('/plain/graphql', 2)
    expect(r.status).toBe(400)
    expect(error(r.json).extensions.code).toBe('BAD_REQUEST')
    expect(error(r.json).message).toMatch(/batching\.enabled/)
    expect(seen).toBe(before)
    expect(metricSum(await proxy.metricsText(), 'igw_proxy_errors_total', 'route="plain",code="BAD_REQUEST"')).toBe(1)
  })

  it('where enabled: bounded in operations, and each operation costs a unit of quota', async () => {
    const before = seen
    for (const n of [0, 4]) {
      const r = await post('/batched/graphql', n)
      expect(r.status, `${n} operations`).toBe(400)
      expect(error(r.json).message).toMatch(/1 to 3 operations/)
    }
    expect(seen).toBe(before)
    // burst 5: a batch of 3 leaves 2, so a second batch of 3 is refused; a batch of 2 still fits.
    const first = await post('/batched/graphql', 3)
    expect(first.status).toBe(200)
    expect(first.json).toHaveLength(3)
    const second = await post('/batched/graphql', 3)
    expect(second.status).toBe(429)
    expect(error(second.json).extensions.code).toBe('RATE_LIMITED')
    expect((await post('/batched/graphql', 2)).status).toBe(200)
    expect(seen).toBe(before + 2)
  })
})
