// The cache's decisions, pure (no sockets): keys, Cache-Control, entity tags, the document
// rewrite, and the shared-memory invalidation and single-flight tables.
import { parse, print } from 'graphql'
import { describe, expect, it } from 'vitest'
import { storeDecision } from '../../filters/cache/cache-control.ts'
import { admittedScopes, cacheKey, canonicalJson, normalizedDocumentHash, tokenScopes, type KeyParts } from '../../filters/cache/cache-key.ts'
import { collectEntityTags, rootFieldsOf, withTypenames } from '../../filters/cache/entity-tags.ts'
import { CACHE_SHARED_BYTES, CacheShared } from '../../filters/cache/shared-state.ts'

const base: KeyParts = { route: 'r', operation: 'd:abc', operationName: 'Q', tenant: 'acme', variables: { a: 1 }, headers: [], claims: [], scopes: undefined }

describe('cache keys', () => {
  it('canonical JSON sorts keys at every level and keeps array order', () => {
    expect(canonicalJson({ b: [2, { d: 1, c: 2 }], a: null, u: undefined })).toBe('{"a":null,"b":[2,{"c":2,"d":1}]}')
  })
  it('every component separates keys: tenant, route, operation, name, variables, vary values, scopes', () => {
    const k = cacheKey(base)
    const variants: Partial<KeyParts>[] = [
      { tenant: 'globex' },
      { tenant: undefined },
      { route: 'r2' },
      { operation: 'p:abc' },
      { operationName: 'R' },
      { variables: { a: 2 } },
      { headers: ['en'] },
      { claims: ['user-1'] },
      { scopes: 'read' },
    ]
    const keys = new Set([k, ...variants.map((v) => cacheKey({ ...base, ...v }))])
    expect(keys.size).toBe(variants.length + 1)
    expect(cacheKey({ ...base, variables: {} })).toBe(cacheKey({ ...base, variables: undefined }))
  })
  it('a tenant id cannot forge another component (no separator injection)', () => {
    // tenants are validated names, but even a hostile value stays inside its own component
    expect(cacheKey({ ...base, tenant: 'acme\nd:abc' })).not.toBe(cacheKey({ ...base, tenant: 'acme' }))
    expect(cacheKey({ ...base, headers: ['x\nt:acme'] })).not.toBe(cacheKey({ ...base, headers: ['x'] }))
  })
  it('normalized document hash ignores formatting', () => {
    expect(normalizedDocumentHash(parse('{a  b}'))).toBe(normalizedDocumentHash(parse('{\n  a\n  b\n}')))
    expect(normalizedDocumentHash(parse('{a b}'))).not.toBe(normalizedDocumentHash(parse('{b a}')))
  })
  it('scopes: all must be allowed; sorted and deduplicated', () => {
    const allowed = new Set(['read', 'read:x'])
    expect(tokenScopes('read:x  read')).toEqual(['read:x', 'read'])
    expect(tokenScopes(['a', 'b'])).toEqual(['a', 'b'])
    expect(tokenScopes(42)).toBeUndefined()
    expect(admittedScopes(['read:x', 'read', 'read'], allowed)).toBe('read read:x')
    expect(admittedScopes(['read', 'admin'], allowed)).toBeUndefined()
  })
})

describe('Cache-Control and storability', () => {
  it('caps the TTL by s-maxage, else max-age; refuses what a shared cache must not keep', () => {
    expect(storeDecision(200, {}, 30)).toEqual({ ttlSeconds: 30, reason: undefined, ageSeconds: 0 })
    expect(storeDecision(200, { 'cache-control': 'max-age=5' }, 30).ttlSeconds).toBe(5)
    expect(storeDecision(200, { 'cache-control': 'max-age=500' }, 30).ttlSeconds).toBe(30)
    expect(storeDecision(200, { 'cache-control': 'max-age=1, s-maxage=20' }, 30).ttlSeconds).toBe(20)
    expect(storeDecision(200, { 'cache-control': ['public', 'max-age="7"'] }, 30).ttlSeconds).toBe(7)
    expect(storeDecision(200, { 'cache-control': 'No-Store' }, 30).reason).toBe('no_store')
    expect(storeDecision(200, { 'cache-control': 'private' }, 30).reason).toBe('private')
    expect(storeDecision(200, { 'cache-control': 'no-cache' }, 30).reason).toBe('no_cache')
    expect(storeDecision(200, { 'cache-control': 'max-age=0' }, 30).reason).toBe('max_age_0')
    expect(storeDecision(200, { 'set-cookie': 'a=b' }, 30).reason).toBe('set_cookie')
    expect(storeDecision(200, { 'content-encoding': 'gzip' }, 30).reason).toBe('encoded')
    expect(storeDecision(200, { vary: '*' }, 30).reason).toBe('vary')
    expect(storeDecision(206, {}, 30).reason).toBe('status')
    expect(storeDecision(500, {}, 30).reason).toBe('status')
  })

  it('counts what the response already aged (Age) and honours Expires when there is no max-age (RFC 9111 4.2)', () => {
    const now = Date.parse('2026-11-26T12:00:00Z')
    // max-age 60, 50 s old already (a CDN in front): 10 s left, and the entry starts 50 s old.
    expect(storeDecision(200, { 'cache-control': 'max-age=60', age: '50' }, 30, now)).toEqual({ ttlSeconds: 10, reason: undefined, ageSeconds: 50 })
    expect(storeDecision(200, { 'cache-control': 's-maxage=60', age: '20, 40' }, 30, now)).toMatchObject({ ttlSeconds: 30, ageSeconds: 20 })
    expect(storeDecision(200, { 'cache-control': 'max-age=60', age: '60' }, 30, now).reason).toBe('stale')
    expect(storeDecision(200, { 'cache-control': 'max-age=60', age: '-5' }, 30, now)).toMatchObject({ ttlSeconds: 30, ageSeconds: 0 }) // invalid Age: ignored
    // No Cache-Control lifetime: Expires − Date; without Date, our clock.
    expect(storeDecision(200, { expires: 'Thu, 26 Nov 2026 12:00:12 GMT', date: 'Thu, 26 Nov 2026 12:00:00 GMT' }, 30, now).ttlSeconds).toBe(12)
    expect(storeDecision(200, { expires: 'Thu, 26 Nov 2026 12:00:20 GMT' }, 30, now).ttlSeconds).toBe(20)
    expect(storeDecision(200, { expires: 'Thu, 26 Nov 2026 12:00:20 GMT', age: '15' }, 30, now).ttlSeconds).toBe(5)
    expect(storeDecision(200, { expires: 'Thu, 26 Nov 2026 13:00:00 GMT' }, 30, now).ttlSeconds).toBe(30)
    expect(storeDecision(200, { expires: '0' }, 30, now).reason).toBe('max_age_0') // not a date: already expired
    expect(storeDecision(200, { expires: 'Thu, 26 Nov 2026 11:00:00 GMT' }, 30, now).reason).toBe('max_age_0')
    // max-age wins over Expires.
    expect(storeDecision(200, { 'cache-control': 'max-age=25', expires: '0' }, 30, now).ttlSeconds).toBe(25)
  })
})

describe('entity tags and the typename rewrite', () => {
  it('collects Type:id (and Type for queries) from nested objects and lists', () => {
    const data = { a: { __typename: 'User', id: 1, friends: [{ __typename: 'User', id: '2' }, { id: 3 }, null] }, b: [{ __typename: 'Post', id: 'p' }] }
    const q = new Set<string>()
    collectEntityTags(data, q, true)
    expect([...q].sort()).toEqual(['Post', 'Post:p', 'User', 'User:1', 'User:2'])
    const m = new Set<string>()
    collectEntityTags(data, m, false)
    expect([...m].sort()).toEqual(['Post:p', 'User:1', 'User:2'])
  })
  it('adds __typename next to every id (aliased too), once, and leaves other documents alone', () => {
    const d = parse('query { a { id x { id __typename } y { name } } b: c { other: id } }')
    expect(print(parse(withTypenames(d)!))).toBe(print(parse('query { a { id x { id __typename } y { name } __typename } b: c { other: id __typename } }')))
    expect(withTypenames(parse('{ hello }'))).toBeUndefined()
  })
  it('finds root fields of the selected operation, through fragments', () => {
    expect(rootFieldsOf(parse('query A { x ...F } fragment F on Query { y __typename } mutation B { z }'), 'A')).toEqual(['x', 'y'])
    expect(rootFieldsOf(parse('query A { x } query B { y }'), undefined)).toEqual([])
  })
})

describe('shared-memory tables', () => {
  it('an entry is dead once one of its tags is invalidated after its request started', () => {
    const s = new CacheShared(new SharedArrayBuffer(CACHE_SHARED_BYTES))
    const seq = s.seq()
    const slots = s.slots(['Entity:1', 'Query.entity', 'Entity:1'])
    expect(slots.length).toBe(2)
    expect(s.valid(slots, seq)).toBe(true)
    s.invalidate(['Entity:2'])
    expect(s.valid(slots, seq)).toBe(true)
    s.invalidate(['Entity:1'])
    expect(s.valid(slots, seq)).toBe(false)
    // a request that started after the invalidation is fine
    expect(s.valid(slots, s.seq())).toBe(true)
  })
  it('two views of one buffer (two workers) see the same state and the same nonce', () => {
    const sab = new SharedArrayBuffer(CACHE_SHARED_BYTES)
    const a = new CacheShared(sab)
    const b = new CacheShared(sab)
    expect(a.nonce).toBe(b.nonce)
    expect(new CacheShared(new SharedArrayBuffer(CACHE_SHARED_BYTES)).nonce).not.toBe(a.nonce)
    const seq = a.seq()
    b.invalidate(['T:1'])
    expect(a.valid(a.slots(['T:1']), seq)).toBe(false)
  })
  it('single flight: one leader per key, followers until it finishes, a short "done" window after a fill', () => {
    const sab = new SharedArrayBuffer(CACHE_SHARED_BYTES)
    const w1 = new CacheShared(sab)
    const w2 = new CacheShared(sab)
    const { slot, fp } = w1.flightSlot('k')
    expect(w1.claim(slot, fp, 1000)).toBe('leader')
    expect(w2.claim(slot, fp, 1000)).toBe('follower')
    expect(w2.leaseLeft(slot)).toBeGreaterThan(900)
    w1.finish(slot, fp, true, 200)
    expect(w2.claim(slot, fp, 1000)).toBe('done')
    const other = w1.flightSlot('other')
    expect(w1.claim(other.slot, other.fp, 1000)).toBe('leader')
    w1.finish(other.slot, other.fp, false, 200)
    expect(w2.claim(other.slot, other.fp, 1000)).toBe('leader') // not filled: the next one leads
    // an expired lease is taken over (a crashed leader does not block a key forever)
    const k3 = w1.flightSlot('k3')
    expect(w1.claim(k3.slot, k3.fp, -5)).toBe('leader')
    expect(w2.claim(k3.slot, k3.fp, 1000)).toBe('leader')
    // another key in an occupied slot: collision (no coordination, never a wrong entry)
    expect(w2.claim(k3.slot, k3.fp ^ 1, 1000)).toBe('collision')
  })
  it('per-id hit counters are exact across views', () => {
    const sab = new SharedArrayBuffer(CACHE_SHARED_BYTES)
    const a = new CacheShared(sab)
    const b = new CacheShared(sab)
    const slot = a.statSlot('hot')
    expect(b.statSlot('hot')).toBe(slot)
    expect(a.statSlot('cold')).not.toBe(slot)
    a.countLookup(slot, true)
    b.countLookup(slot, true)
    b.countLookup(slot, false)
    expect(a.hitRatio(slot)).toBeCloseTo(2 / 3)
    expect(a.hitRatio(a.statSlot('cold'))).toBeUndefined()
  })
})
