// Two control plane instances on one database (behind one URL, a proxy reconnects to either).
// An instance hears of the other's commits a little later (PostgreSQL's NOTIFY, or its head poll:
// 5 s, and only the poll on SQLite). A proxy that reconnected to it meanwhile, running the newest
// version, was answered `event: current` with the instance's stale head: the proxy took that as a
// control plane whose store went back and NACKed it ("older than the running version … was the
// control plane's store reset or restored from a backup?"), a false alarm in its log and in
// GET /v1/proxies. The instance now checks the proxy's version against the store.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

/** Reads SSE events from a fetch body. */
class Events {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>
  readonly #decoder = new TextDecoder()
  #buf = ''
  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.getReader()
  }
  async next(): Promise<{ event: string; data: string; id?: string }> {
    for (;;) {
      const end = this.#buf.indexOf('\n\n')
      if (end !== -1) {
        const block = this.#buf.slice(0, end)
        this.#buf = this.#buf.slice(end + 2)
        if (block.startsWith(':')) continue // a ping
        const ev: { event: string; data: string; id?: string } = { event: 'message', data: '' }
        for (const line of block.split('\n')) {
          const c = line.indexOf(': ')
          const [k, v] = c === -1 ? [line, ''] : [line.slice(0, c), line.slice(c + 2)]
          if (k === 'event') ev.event = v
          else if (k === 'data') ev.data = v
          else if (k === 'id') ev.id = v
        }
        return ev
      }
      const r = await this.#reader.read()
      if (r.done) throw new Error('stream ended')
      this.#buf += this.#decoder.decode(r.value, { stream: true })
    }
  }
}

describe('a proxy reconnecting to an instance that has not heard of the newest commit yet', () => {
  let a: TestControlPlane
  let b: TestControlPlane
  const aborts: AbortController[] = []
  beforeAll(async () => {
    a = await startTestControlPlane({ seed: seedDocument() })
    // Same SQLite file and signing key: the second instance hears of commits by its head poll only.
    b = await startTestControlPlane({ dir: a.dir, db: a.dbSpec, seed: null })
  })
  afterAll(async () => {
    for (const ac of aborts) ac.abort()
    await b?.close()
    await a?.close()
  })

  it('is told it is current (no stale head to NACK), and still gets the next version', async () => {
    const put = await a.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })
    expect(put.status).toBeLessThan(300)
    const newest = a.store.head()!.version
    // The situation under test: the other instance still has the older head.
    expect(b.store.head()!.version).toBeLessThan(newest)

    const token = await b.token({ sub: 'proxy-lag', roles: ['proxy'] })
    const ac = new AbortController()
    aborts.push(ac)
    const res = await fetch(`${b.url}/v1/stream?proxy=lag-1&version=${newest}`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
    expect(res.status).toBe(200)
    const events = new Events(res.body!)
    const first = await events.next()
    expect(first.event).toBe('current')
    expect(JSON.parse(first.data)).toEqual({ version: newest })

    // The next commit (on the first instance) reaches the proxy through the second one once it
    // hears of it; the version the proxy already runs is not sent again.
    const put2 = await a.api('/v1/tenants/hooli', { method: 'PUT', body: JSON.stringify({ tier: 'silver' }) })
    expect(put2.status).toBeLessThan(300)
    const next = await events.next()
    expect(next.event).toBe('snapshot')
    expect(Number(next.id)).toBe(newest + 1)
  }, 60_000)

  it('a proxy ahead of the store (it was reset or restored) is still told the older head', async () => {
    const token = await b.token({ sub: 'proxy-ahead', roles: ['proxy'] })
    const ac = new AbortController()
    aborts.push(ac)
    const res = await fetch(`${b.url}/v1/stream?proxy=ahead-1&version=625`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
    const first = await new Events(res.body!).next()
    expect(first.event).toBe('current')
    expect(JSON.parse(first.data).version).toBeLessThan(625)
  }, 30_000)
})
