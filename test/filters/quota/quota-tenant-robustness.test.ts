// Quota and tenant identification as a hostile client exercises them, through the real proxy
// (worker threads, shared memory), a real redis-server and real clients: made-up and malformed
// tenant ids, a flood of tenants filling the shared table, absurd and infinite cost estimates,
// and oversized bearer tokens. The bar: a precise GraphQL error, nobody spends another tenant's
// limits, and everybody else keeps being served.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { SignJWT } from 'jose'
import { Pool, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { JwtVerifier } from '../../../filters/tenant/jwt-verifier.ts'
import { startDemoBackend, startRawBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep } from '../../helpers/wait.ts'
import { intParam, parseList } from './structured-fields.ts'

type Reply = { status: number; headers: Record<string, string | string[] | undefined>; json: { data?: unknown; errors?: { message: string; extensions: Record<string, unknown> }[] } }

async function gql(url: string, headers: Record<string, string> | string[], query = '{ hello }', path = '/graphql'): Promise<Reply> {
  const h = Array.isArray(headers) ? ['content-type', 'application/json', ...headers] : { 'content-type': 'application/json', ...headers }
  const res = await request(`${url}${path}`, { method: 'POST', headers: h, body: JSON.stringify({ query }) })
  return { status: res.statusCode, headers: res.headers, json: JSON.parse(await res.body.text()) as Reply['json'] }
}

const code = (r: Reply) => r.json.errors?.[0]?.extensions.code

/** A list size no estimate survives: Number('1' + 400 zeros) is Infinity. */
const INFINITE_LIST = `{ items(first: 1${'0'.repeat(400)}) { id } }`
/** 10^18 estimated units: finite, far beyond any limit. */
const ENORMOUS = '{ items(first: 1000000000) { more(first: 1000000000) { id } } }'

/**
 * A short drain (its idle keep-alive grace is a quarter of it, 100 ms): every request here has
 * been answered before close(), and the default waits 1 s for the client's idle connections.
 */
const QUICK_CLOSE = { shutdown: { drainTimeoutMs: 400 } }

let backend: DemoBackend
let redis: TestRedis
beforeAll(async () => {
  backend = await startDemoBackend()
  redis = await startRedis()
})
afterAll(async () => {
  await backend?.close()
  await redis?.close()
})

describe('tenant ids a client makes up', () => {
  it('allowUnlisted admits well-formed ids only: "_anonymous", padded, repeated-header, non-ASCII and overlong ids get 403 UNKNOWN_TENANT', async () => {
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      mode: 'ingress',
      tenants: { acme: {} },
      quotas: { defaults: { graphql: { rate: 0.001, burst: 2 } } },
      routes: [
        // No tenant filter: its requests share the "_anonymous" bucket.
        { name: 'open', match: { pathPrefix: '/open' }, upstream: backend.url, filters: [{ name: 'quota' }] as never },
        { name: 'api', upstream: backend.url, filters: [{ name: 'tenant', allowUnlisted: true }, { name: 'quota' }] as never },
      ],
    })
    try {
      // Naming the gateway's own pool must not spend the anonymous route's bucket.
      for (let i = 0; i < 3; i++) {
        const r = await gql(p.url, { 'x-tenant-id': '_anonymous' })
        expect(r.status).toBe(403)
        expect(code(r)).toBe('UNKNOWN_TENANT')
      }
      expect((await gql(p.url, {}, '{ hello }', '/open/graphql')).status).toBe(200)
      for (const bad of ['', '_overflow', 'a'.repeat(129), 'h\u00e9llo', '-x', 'a b']) {
        const r = await gql(p.url, { 'x-tenant-id': bad })
        expect({ bad, status: r.status, code: code(r) }).toEqual({ bad, status: 403, code: 'UNKNOWN_TENANT' })
        expect(r.json.errors![0]!.message).toMatch(/^invalid tenant id/)
      }
      // A repeated header arrives joined ("acme, globex"): neither tenant, and not a new one.
      const twice = await gql(p.url, ['x-tenant-id', 'acme', 'x-tenant-id', 'globex'])
      expect([twice.status, code(twice)]).toEqual([403, 'UNKNOWN_TENANT'])
      // Well-formed ids still work, listed or not, and prototype member names are just names.
      for (const ok of ['acme', 'new-tenant.1', 'constructor', 'toString']) expect((await gql(p.url, { 'x-tenant-id': ok })).status).toBe(200)
    } finally {
      await p.close()
    }
  })

  it('a flood of made-up tenants filling the shared table never pushes a listed tenant into the overflow slot', async () => {
    // The upstream's work is not under test: a fixed answer costs a fraction of a GraphQL server's.
    const upstream = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"hello":"world"}}'))
    })
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      tenants: { acme: {} },
      quotas: { defaults: { graphql: { rate: 0.001, burst: 1 } } },
      routes: [{ name: 'api', upstream: upstream.url, filters: [{ name: 'tenant', allowUnlisted: true }, { name: 'quota' }] as never }],
    })
    const pool = new Pool(p.url, { connections: 64, pipelining: 1 })
    try {
      // 4096 slots, 90 % usable by listed tenants (75 % by unlisted ones): 3800 distinct ids would
      // fill the whole 90 % were unlisted ids not held to less; the rest share the overflow slot.
      const statuses = await Promise.all(
        Array.from({ length: 3800 }, (_, i) =>
          pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': `flood-${i}` }, body: '{"query":"{ hello }"}' }).then(async (r) => {
            await r.body.dump()
            return r.statusCode
          }),
        ),
      )
      expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0) // the overflow slot is spent
      expect(metricSum(await p.metricsText(), 'igw_quota_table_overflows')).toBeGreaterThan(0)
      // acme never sent a request: its one unit of burst is its own.
      const r = await gql(p.url, { 'x-tenant-id': 'acme' })
      expect([r.status, r.headers.ratelimit]).toEqual([200, '"rate";r=0;t=1000'])
      expect((await gql(p.url, { 'x-tenant-id': 'acme' })).status).toBe(429)
    } finally {
      await pool.close()
      await p.close()
      await upstream.close()
    }
  })
})

describe('absurd cost estimates', () => {
  it('an infinite estimate (persisted failing open) is refused with integer Retry-After, RateLimit and extensions, and never counted as Infinity', async () => {
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      tenants: { acme: {}, bud: {} },
      quotas: { tenants: { acme: { graphql: { rate: 10, burst: 20 } }, bud: { graphql: { limitPerDay: null }, budget: { units: 1000 } } } },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted', failMode: 'open' }, { name: 'quota' }] as never }],
    })
    try {
      const r = await gql(p.url, { 'x-tenant-id': 'acme' }, INFINITE_LIST)
      // It can never fit: refused for good (400), no Retry-After or RateLimit reset to wait for.
      expect(r.status).toBe(400)
      expect(r.headers['retry-after']).toBeUndefined()
      expect(r.headers.ratelimit).toBeUndefined()
      const ext = r.json.errors![0]!.extensions
      expect(ext).toMatchObject({ code: 'BAD_REQUEST', reason: 'too_expensive', policy: 'rate', limit: 20 })
      expect(Number.isFinite(ext.cost)).toBe(true)
      expect(r.json.errors![0]!.message).toMatch(/exceeds the graphql burst of 20 units/)
      // The tenant's bucket is untouched: ordinary requests still pass.
      expect((await gql(p.url, { 'x-tenant-id': 'acme' })).status).toBe(200)
      // A budget that only counts admits it, but its figures stay numbers.
      expect((await gql(p.url, { 'x-tenant-id': 'bud' }, INFINITE_LIST)).status).toBe(200)
      const text = await p.metricsText()
      expect(text).not.toMatch(/igw_quota_used_today\{[^}]*\} \+?(Inf|NaN)/)
      expect(Number.isFinite(metricSum(text, 'igw_quota_used_today', 'tenant="bud"'))).toBe(true)
      expect(Number.isFinite(metricSum(text, 'igw_budget_used_ratio', 'tenant="bud"'))).toBe(true)
    } finally {
      await p.close()
    }
  })

  it('a request larger than the whole daily quota or budget is told so, not that the quota is used up', async () => {
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      tenants: { day: {}, cap: {} },
      quotas: { tenants: { day: { graphql: { limitPerDay: 1000 } }, cap: { budget: { units: 1000, hardCap: true } } } },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] as never }],
    })
    try {
      const d = await gql(p.url, { 'x-tenant-id': 'day' }, ENORMOUS)
      expect([d.status, code(d)]).toEqual([400, 'BAD_REQUEST'])
      expect(d.json.errors![0]!.message).toMatch(/exceeds the daily graphql quota of 1000 units/)
      expect(d.json.errors![0]!.extensions).toMatchObject({ policy: 'daily', limit: 1000, reason: 'too_expensive' })
      const b = await gql(p.url, { 'x-tenant-id': 'cap' }, ENORMOUS)
      expect([b.status, code(b)]).toEqual([400, 'BAD_REQUEST'])
      expect(b.json.errors![0]!.extensions).toMatchObject({ policy: 'budget', reason: 'too_expensive' })
      expect(b.json.errors![0]!.message).toMatch(/exceeds the budget of 1000 units per 30 d/)
      // Both still serve ordinary requests: nothing was spent.
      const ok = await gql(p.url, { 'x-tenant-id': 'day' })
      expect(ok.status).toBe(200)
      expect(String(ok.headers.ratelimit)).toMatch(/^"daily";r=999;t=\d+$/)
      expect((await gql(p.url, { 'x-tenant-id': 'cap' })).status).toBe(200)
    } finally {
      await p.close()
    }
  })

  it("one tenant's 10^18-unit estimate neither fails other tenants' Redis decisions nor opens the breaker (fail-closed)", async () => {
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      redis: { url: redis.url, keyPrefix: 'robust:' },
      tenants: { acme: {}, bud: {} },
      quotas: {
        redis: { onOutage: 'fail-closed', budgetMs: 200 },
        tenants: { acme: { graphql: { rate: 1000, burst: 1000 } }, bud: { budget: { units: 1000 } } },
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }, { name: 'quota' }] as never }],
    })
    try {
      // Sequential requests for well over breakerAfterMs (50 ms): enough to open it when they fail.
      const t0 = Date.now()
      let hostile = 0
      while (Date.now() - t0 < 200 || hostile < 5) {
        const r = await gql(p.url, { 'x-tenant-id': 'bud' }, ENORMOUS)
        expect([r.status, code(r)]).not.toEqual([503, 'OVERLOADED'])
        hostile++
      }
      // The same event-loop turn (one Redis batch) as a hostile decision.
      const [bad, good] = await Promise.all([gql(p.url, { 'x-tenant-id': 'bud' }, ENORMOUS), gql(p.url, { 'x-tenant-id': 'acme' })])
      expect(good.status).toBe(200)
      expect(bad.status).toBe(200) // a budget without hardCap counts, it does not refuse
      expect((await gql(p.url, { 'x-tenant-id': 'acme' })).status).toBe(200)
      const text = await p.metricsText()
      expect(metricSum(text, 'igw_quota_redis_errors_total')).toBe(0)
      expect(metricSum(text, 'igw_quota_redis_breaker_open')).toBe(0)
      expect(metricSum(text, 'igw_quota_redis_fallbacks_total')).toBe(0)
    } finally {
      await p.close()
    }
  })
})

describe('bearer tokens', () => {
  const SECRET = 'an-hmac-secret-of-at-least-32-characters!'

  it('WWW-Authenticate stays one RFC 6750 challenge when the reason quotes a claim name', async () => {
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      tenants: { acme: {} },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'], claim: 'org.tenant' } }] as never }],
    })
    try {
      const jwt = await new SignJWT({ sub: 'u' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))
      const r = await gql(p.url, { authorization: `Bearer ${jwt}` })
      expect([r.status, code(r)]).toEqual([401, 'UNAUTHENTICATED'])
      expect(r.json.errors![0]!.message).toBe('token has no "org.tenant" claim')
      // error_description = quoted-string of %x20-21 / %x23-5B / %x5D-7E, then nothing.
      expect(String(r.headers['www-authenticate'])).toMatch(/^Bearer realm="igw", error="invalid_token", error_description="[\x20\x21\x23-\x5b\x5d-\x7e]*"$/)
      expect(String(r.headers['www-authenticate'])).toContain('org.tenant')
    } finally {
      await p.close()
    }
  })

  it('a token refused as not yet valid (nbf) is accepted once it is due, not refused from the cache for 30 s', async () => {
    const p = await startTestProxy({
      ...QUICK_CLOSE,
      tenants: { acme: {} },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'], clockToleranceSec: 30 } }] as never }],
    })
    try {
      // Due (nbf - tolerance) on a whole second 1–2 s from now: refused now (with a second's
      // margin for a busy machine; "the next second" could be 1 ms away), accepted within ~2 s.
      const due = Math.ceil((Date.now() + 1000) / 1000)
      const jwt = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setNotBefore(due + 30).setExpirationTime('5m').sign(new TextEncoder().encode(SECRET))
      const early = await gql(p.url, { authorization: `Bearer ${jwt}` })
      expect([early.status, code(early)]).toEqual([401, 'UNAUTHENTICATED'])
      expect(early.json.errors![0]!.message).toMatch(/nbf/)
      await sleep(due * 1000 - Date.now() + 50)
      expect((await gql(p.url, { authorization: `Bearer ${jwt}` })).status).toBe(200)
    } finally {
      await p.close()
    }
  })

  it('the verdict cache is bounded in bytes: 3000 distinct 15 KiB garbage tokens do not stay in memory', async () => {
    setFlagsFromString('--expose_gc')
    const gc = runInNewContext('gc') as () => void
    const v = new JwtVerifier({ header: 'authorization', claim: 'tenant_id', algorithms: ['HS256'], secret: SECRET, clockToleranceSec: 30, requireExpiration: false, required: true })
    const pad = 'A'.repeat(15 * 1024)
    // Flat strings, as tokens read from request headers are (not ropes sharing `pad`).
    const tokenOf = (i: number) => Buffer.from(`eyJhbGciOiJIUzI1NiJ9.${pad}${i}.c2ln`).toString('latin1')
    gc()
    const before = process.memoryUsage().heapUsed
    for (let i = 0; i < 3000; i++) expect((await v.verify(tokenOf(i))).ok).toBe(false)
    gc()
    const retainedMb = (process.memoryUsage().heapUsed - before) / 1e6
    // The newest verdicts are still cached (a flood of one bad token stays cheap)…
    expect(v.cached(tokenOf(2999))).toEqual({ ok: false, kind: 'invalid', reason: 'token signature does not verify' })
    // …but not 3000 × 15 KiB = 46 MB of them.
    expect(retainedMb).toBeLessThan(20)
  })
})
