// The demo backend's `countdown` was an async generator waiting on a timer: an unsubscribe could
// not end it before that timer fired (up to intervalMs, which had no bound), and a negative
// intervalMs ran at 1 ms. Its pubsub EventTarget kept Node's default limit of ten listeners, so
// an eleventh concurrent `entityChanged` subscriber printed a MaxListenersExceededWarning.
import { createClient, type Client } from 'graphql-ws'
import { WebSocket } from 'ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../proxy/demo-backend.ts'

let demo: DemoBackend
let client: Client
beforeAll(async () => {
  demo = await startDemoBackend()
  client = createClient({ url: `${demo.url.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false })
})
afterAll(async () => {
  await client.dispose()
  await demo.close()
})

interface Seen {
  values: unknown[]
  done: Promise<void>
  unsubscribe: () => void
}
const subscribe = (query: string, to = client): Seen => {
  const values: unknown[] = []
  let unsubscribe = () => {}
  const done = new Promise<void>((resolve, reject) => {
    unsubscribe = to.subscribe({ query }, { next: (v) => void values.push(v), error: reject, complete: resolve })
  })
  return { values, done, unsubscribe }
}

describe('countdown', () => {
  it.each([60_001, 2_147_483_647, -1])('intervalMs %i is a GraphQL error naming the bound, with no value', async (ms) => {
    const s = subscribe(`subscription { countdown(from: 2, intervalMs: ${ms}) }`)
    // Old code: the first value at once, then a wait of ms (or 1 ms for a negative one).
    await expect.poll(() => s.values.length, { timeout: 3_000, interval: 10 }).toBeGreaterThan(0)
    s.unsubscribe()
    expect(s.values).toEqual([{ errors: [expect.objectContaining({ message: `countdown: intervalMs must be from 0 to 60000, got ${ms}` })] }])
  })

  it('the bound itself and the default still count down', async () => {
    const s = subscribe('subscription { a: countdown(from: 2, intervalMs: 0) }')
    await s.done
    expect(s.values).toEqual([{ data: { a: 2 } }, { data: { a: 1 } }])
    const max = subscribe('subscription { countdown(from: 1, intervalMs: 60000) }')
    await expect.poll(() => max.values, { timeout: 10_000 }).toEqual([{ data: { countdown: 1 } }])
    max.unsubscribe()
    await expect.poll(() => demo.liveSubscriptions(), { timeout: 10_000 }).toBe(0)
  })

  it('an unsubscribe ends it at once, not when its pending interval is over', async () => {
    const s = subscribe('subscription { countdown(from: 5, intervalMs: 30000) }')
    await expect.poll(() => s.values, { timeout: 10_000 }).toEqual([{ data: { countdown: 5 } }])
    expect(demo.liveSubscriptions()).toBe(1)
    s.unsubscribe()
    await expect.poll(() => demo.liveSubscriptions(), { timeout: 2_000 }).toBe(0)
  })
})

describe('entityChanged', () => {
  it('twelve concurrent subscribers each get the change, with no listener-leak warning', async () => {
    const warnings: string[] = []
    const onWarning = (w: Error) => void warnings.push(`${w.name}: ${w.message}`)
    process.on('warning', onWarning)
    // Its own backend: Node warns once per EventTarget, so a retry on a shared one would pass.
    const own = await startDemoBackend()
    const ownClient = createClient({ url: `${own.url.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, retryAttempts: 0, lazy: false })
    const subs = Array.from({ length: 12 }, (_, i) => subscribe(`subscription { entityChanged${i % 2 ? '(id: "7")' : ''} { id name } }`, ownClient))
    try {
      await expect.poll(() => own.liveSubscriptions(), { timeout: 5_000 }).toBe(12)
      const r = await fetch(`${own.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'mutation { updateEntity(id: "7", name: "seven") { id } }' }) })
      expect(r.status).toBe(200)
      await r.body?.cancel()
      await expect.poll(() => subs.map((s) => s.values.length), { timeout: 10_000 }).toEqual(Array(12).fill(1))
      expect(subs[0]?.values).toEqual([{ data: { entityChanged: { id: '7', name: 'seven' } } }])
      // Node emits the warning on a later tick: a round trip first.
      await fetch(`${own.url}/healthz`).then((x) => x.text())
      expect(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning'))).toEqual([])
      for (const s of subs) s.unsubscribe()
      await expect.poll(() => own.liveSubscriptions(), { timeout: 10_000 }).toBe(0)
    } finally {
      process.off('warning', onWarning)
      await ownClient.dispose()
      await own.close()
    }
  })
})
