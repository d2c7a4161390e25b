// Sweep 20a: `headers: { ratelimit: false, legacy: true }` (clients that read only the old
// X-RateLimit-* headers). Admitted responses carried no X-RateLimit-* at all — they were written
// only alongside the IETF headers — while refusals did: a client could not see where it stood
// until it was refused. Real proxy, real backend, real client.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'

async function call(url: string, tenant = 'acme') {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  await res.body.text()
  return { status: res.statusCode, h: res.headers }
}

let be: RawBackend
beforeAll(async () => {
  be = await startRawBackend(echoHandler)
})
afterAll(async () => {
  await be?.close()
})

describe('legacy X-RateLimit-* headers without the IETF ones (sweep 20a)', () => {
  it('admitted requests carry X-RateLimit-Limit/-Remaining/-Reset (bucket and concurrency-only rules), and no RateLimit or RateLimit-Policy', async () => {
    const p = await startTestProxy({
      tenants: { acme: {}, beta: {} },
      quotas: { tenants: { acme: { graphql: { rate: 0.001, burst: 3, limitPerDay: 100 } }, beta: { graphql: { maxConcurrent: 4 } } } },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota', headers: { ratelimit: false, legacy: true } }] }],
    })
    try {
      const remaining: string[] = []
      for (let i = 0; i < 3; i++) {
        const r = await call(p.url)
        expect(r.status).toBe(200)
        expect(r.h['ratelimit']).toBeUndefined()
        expect(r.h['ratelimit-policy']).toBeUndefined()
        expect(r.h['x-ratelimit-limit']).toBe('3') // the bucket is the most constrained policy
        expect(Number(r.h['x-ratelimit-reset'])).toBeGreaterThan(0)
        remaining.push(String(r.h['x-ratelimit-remaining']))
      }
      expect(remaining).toEqual(['2', '1', '0'])
      const refused = await call(p.url)
      expect(refused.status).toBe(429)
      expect([refused.h['x-ratelimit-limit'], refused.h['x-ratelimit-remaining']]).toEqual(['3', '0'])
      expect(refused.h['x-ratelimit-reset']).toBe(refused.h['retry-after'])
      expect(refused.h['ratelimit']).toBeUndefined()

      // A concurrency-only rule: its free slots, the same way.
      const b = await call(p.url, 'beta')
      expect(b.status).toBe(200)
      expect([b.h['x-ratelimit-limit'], b.h['x-ratelimit-remaining']]).toEqual(['4', '3'])
      expect(b.h['ratelimit-policy']).toBeUndefined()
    } finally {
      await p.close()
    }
  })
})
