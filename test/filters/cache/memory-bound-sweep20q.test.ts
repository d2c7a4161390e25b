// The L1's `maxBytes` bounds the memory its entries really hold, with many small entries (the
// common case: one entity per query). Each entry is built as the cache builds it from a real
// response — its key by cacheKey, its body a view into the socket read the way the upstream
// client hands it over, its tags, slots and headers — and the heap is measured after a full GC.
// Counted at 256 bytes of overhead, with keys kept as string trees, a typed array per entry and
// bodies that kept their whole socket read alive, the L1 held about 2.1× its bound (1.5× with ten
// entities per entry).
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterAll, describe, expect, it } from 'vitest'
import { cacheKey, varyNamesPart } from '../../../filters/cache/cache-key.ts'
import { collectEntityTags } from '../../../filters/cache/entity-tags.ts'
import { acquireRouteCache, type RouteCache } from '../../../filters/cache/route-cache.ts'
import { CacheShared } from '../../../filters/cache/shared-state.ts'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

function heap(): number {
  gc()
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

const MAX_BYTES = 4 * 1024 * 1024
const shared = new CacheShared(undefined)
const caches: RouteCache[] = []
afterAll(() => {
  for (const c of caches) c.release()
})

/** One stored response of `entities` entities, as fill() builds it. */
function store(rc: RouteCache, i: number, entities: number): void {
  const key = cacheKey({ route: 'graphql', target: '/graphql', operation: `d:${'0123456789abcdef'.repeat(4)}`, operationName: 'Entity', tenant: 'acme', variables: { id: String(i) }, headers: ['en-US'], claims: [], scopes: undefined, varyNames: varyNamesPart({ headers: ['accept-language'], claims: [] }), media: '' })
  const list = Array.from({ length: entities }, (_, j) => ({ id: `${i}-${j}`, name: `Entity ${i}`, __typename: 'Entity' }))
  const text = JSON.stringify({ data: entities === 1 ? { entity: list[0] } : { entities: list } })
  // What the upstream client hands over: the body as a view into the read that held the head too.
  const head = `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${text.length}\r\ndate: ${new Date().toUTCString()}\r\nconnection: keep-alive\r\n\r\n`
  const read = Buffer.from(head + text)
  const body = read.subarray(head.length)
  const tags = new Set(['route:graphql', `Query.${entities === 1 ? 'entity' : 'entities'}`])
  collectEntityTags(JSON.parse(text).data, tags, true)
  const now = Date.now()
  const tagList = [...tags]
  rc.set({ key, status: 200, headers: { 'content-type': Buffer.from('application/json').toString(), 'cache-control': `max-age=${60 + (i % 2)}` }, body, created: now - 0.5, freshUntil: now + 60_000.5, staleUntil: now + 60_000.5, errorUntil: now + 60_000.5, stored: now, seq: shared.seq(), slots: shared.slots(tagList), statSlot: -2, tags: tagList, revalidating: false })
}

describe('maxBytes bounds what L1 entries really hold', () => {
  it.each([
    ['one small entity each', 1],
    ['ten entities each', 10],
  ])('%s', (_name, entities) => {
    const rc = acquireRouteCache(`memory-${entities}`, MAX_BYTES, shared, false)
    caches.push(rc)
    const before = heap()
    // Three times what fits: the LRU evicts, and what stays is a full cache.
    let i = 0
    for (; rc.lru.calculatedSize < MAX_BYTES - 16_384; i++) store(rc, i, entities)
    for (const end = i * 3; i < end; i++) store(rc, i, entities)
    const held = heap() - before
    expect(rc.lru.size).toBeGreaterThan(100)
    expect(held / MAX_BYTES).toBeLessThan(1.15)
    expect(held / MAX_BYTES).toBeGreaterThan(0.5) // accounting is not wildly pessimistic either
  })
})
