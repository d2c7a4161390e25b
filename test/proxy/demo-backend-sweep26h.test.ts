// The demo backend's filtered `entityChanged(id: …)` wrapped the pubsub iterator in an async
// generator: an unsubscribe could not stop it until an entity with that id changed, so every
// subscribe/unsubscribe left a pubsub listener behind. Its export endpoint answered `count=abc`
// with 200 and an empty body, POST like GET, and HEAD after generating every record it then did
// not send.
import { createClient } from 'graphql-ws'
import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../proxy/demo-backend.ts'

let demo: DemoBackend
beforeAll(async () => {
  demo = await startDemoBackend()
})
afterAll(() => demo.close())

const gql = async (url: string, query: string) => {
  const r = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })
  return (await r.json()) as { data?: unknown }
}

describe('entityChanged(id:)', () => {
  it('delivers only that id, and an unsubscribe frees its pubsub listener at once', async () => {
    // Its own backend: a retry on a shared one would start with the listeners left behind.
    const own = await startDemoBackend()
    const client = createClient({ url: `${own.url.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false })
    try {
      // Sequential, a new id each round: a change of a left-behind subscription's id would have
      // let it stop.
      for (let round = 0; round < 12; round++) {
        const id = String(100 + round)
        const got: unknown[] = []
        const unsubscribe = client.subscribe<{ entityChanged: { id: string; name: string } }>(
          { query: `subscription { entityChanged(id: "${id}") { id name } }` },
          { next: (v) => void got.push(v.data?.entityChanged), error: () => undefined, complete: () => undefined },
        )
        // The listener is attached some time after the subscribe message: publish until one lands.
        await expect
          .poll(async () => {
            await gql(own.url, `mutation { a: updateEntity(id: "1", name: "other ${round}") { id } b: updateEntity(id: "${id}", name: "r${round}") { id } }`)
            return got.length
          }, { timeout: 5_000, interval: 20 })
          .toBeGreaterThan(0)
        expect(got[0]).toEqual({ id, name: `r${round}` })
        expect(own.liveSubscriptions()).toBe(1)
        unsubscribe()
        await expect.poll(() => own.liveSubscriptions(), { timeout: 2_000 }).toBe(0)
      }
    } finally {
      await client.dispose()
      await own.close()
    }
  })
})

describe('GET /export/entities.ndjson', () => {
  const exp = (query: string, method = 'GET') => fetch(`${demo.url}/export/entities.ndjson${query}`, { method })

  it.each(['abc', '-1', '1.5', '', '1e3', '50000001'])('count=%s is a 400 naming the parameter', async (count) => {
    const r = await exp(`?count=${count}`)
    expect(r.status).toBe(400)
    expect(r.headers.get('content-type')).toBe('application/json')
    expect(((await r.json()) as { error: string }).error).toContain('count')
  })

  it('a valid count streams that many records, 0 none, and no count 100', async () => {
    const lines = async (q: string) => (await (await exp(q)).text()).split('\n').filter(Boolean)
    expect((await lines('?count=3')).map((l) => (JSON.parse(l) as { id: string }).id)).toEqual(['1', '2', '3'])
    expect(await lines('?count=0')).toEqual([])
    expect(await lines('')).toHaveLength(100)
  })

  it.each(['POST', 'PUT', 'DELETE'])('%s is a 405 that allows GET and HEAD', async (method) => {
    const r = await exp('?count=3', method)
    expect(r.status).toBe(405)
    expect(r.headers.get('allow')).toBe('GET, HEAD')
    await r.body?.cancel()
  })

  it('HEAD answers like GET without a body, and without generating the records it would not send', async () => {
    // Node discarded the body but the loop still built every record, synchronously (no
    // backpressure without a body): 5M took seconds of a frozen backend, 50M minutes.
    const t0 = performance.now()
    const r = await exp('?count=5000000', 'HEAD')
    const ms = performance.now() - t0
    expect(r.status).toBe(200)
    expect(r.headers.get('content-type')).toBe('application/x-ndjson')
    expect(await r.text()).toBe('')
    expect(ms).toBeLessThan(2_000)
    expect((await exp('?count=abc', 'HEAD')).status).toBe(400)
  })
})
