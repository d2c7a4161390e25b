// Sweep 28e: RateLimit-Policy / RateLimit are RFC 9651 structured fields, whose Integers have at
// most 15 digits; a field holding a longer one fails to parse as a whole. limitPerDay, budget
// units and maxConcurrent are accepted up to 2^53 (16 digits): such a tenant's headers were
// unparseable, and a client lost every policy in them (the bucket's too), not just the big one.
// Real proxy, real backend, a strict RFC 9651 parser.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { intParam, parseList } from './structured-fields.ts'

let be: RawBackend
beforeAll(async () => {
  be = await startRawBackend(echoHandler)
})
afterAll(async () => {
  await be?.close()
})

describe('RateLimit headers with limits beyond 15 digits (sweep 28e)', () => {
  it('stay valid structured fields, every policy still readable', async () => {
    const huge = 5_000_000_000_000_000 // 16 digits, a safe integer the schema accepts
    const p = await startTestProxy({
      tenants: { acme: {} },
      quotas: {
        tenants: { acme: { graphql: { rate: 10, burst: 20, limitPerDay: huge, maxConcurrent: huge }, budget: { units: huge, window: '1h', bucket: '1m', hardCap: true } } },
      },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    try {
      const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ a }"}' })
      await res.body.text()
      expect(res.statusCode).toBe(200)
      const policy = parseList(String(res.headers['ratelimit-policy']))
      const now = parseList(String(res.headers['ratelimit']))
      expect(policy.map((i) => i.value)).toEqual(['rate', 'daily', 'budget', 'concurrent'])
      expect(now.map((i) => i.value)).toEqual(['rate', 'daily', 'budget', 'concurrent'])
      // The bucket's figures are exact; the huge ones read as the largest Integer there is.
      expect([intParam(policy[0]!, 'q'), intParam(now[0]!, 'r')]).toEqual([20, 19])
      for (const item of policy.slice(1)) expect(intParam(item, 'q')).toBe(999_999_999_999_999)
      for (const item of now.slice(1)) expect(intParam(item, 'r')).toBe(999_999_999_999_999)
    } finally {
      await p.close()
    }
  })
})
