// Sweep 35d: a drain ends a relayed subscription stream (SSE, multipart) after the last whole event
// the client got (sweep 34f). The proxy keeps the last bytes relayed to know where it is; they are
// now kept in one small buffer per stream, reused, where each chunk allocated a copy. Here the
// stream is split at every byte offset around event boundaries — the bytes before the split in
// one-byte chunks (the tail built piece by piece), the rest after the drain began, whole or again
// byte by byte — on a route without response filters (relayed directly) and on one with the cache
// (relayed through a filter's body stream). Each client must get exactly the events up to the first
// boundary at or after the split, closed as its framing closes. Real igw proxy, node:http
// backend, undici clients.
import type { ServerResponse } from 'node:http'
import { Agent, request } from 'undici'
import { describe, expect, it } from 'vitest'
import { startRawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'

const sse = (nl: string) => [1, 2, 3].map((n) => `event: next${nl}data: {"data":{"x":${n}}}${nl}${nl}`).join('')
const part = (n: number) => {
  const json = JSON.stringify({ data: { n } })
  return `\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${json.length}\r\n\r\n${json}\r\n---`
}
const KINDS = {
  sse: { type: 'text/event-stream', text: sse('\n'), ends: ['\n\n', '\r\n\r\n', '\r\r'], closing: '' },
  crlf: { type: 'text/event-stream', text: sse('\r\n'), ends: ['\n\n', '\r\n\r\n', '\r\r'], closing: '' },
  multipart: { type: 'multipart/mixed; boundary="-"', text: '\r\n---' + part(1) + part(2) + part(3), ends: ['\r\n---'], closing: '--\r\n' },
} as const
type Kind = keyof typeof KINDS

/** Where events end in `kind`'s text: the lengths of its prefixes that end with a boundary. */
function boundaries(kind: Kind): number[] {
  const { text, ends } = KINDS[kind]
  const at: number[] = []
  for (let p = 1; p <= text.length; p++) if (ends.some((e) => text.slice(0, p).endsWith(e))) at.push(p)
  return at
}

/** What a drain that comes after `k` bytes leaves the client: up to the first boundary at or after k. */
function expected(kind: Kind, k: number): string {
  const end = boundaries(kind).find((p) => p >= k)!
  return KINDS[kind].text.slice(0, end) + KINDS[kind].closing
}

const tick = () => new Promise((r) => setImmediate(r))

describe('a drain ends subscription streams split at every byte offset at the right boundary', () => {
  it('SSE (LF and CRLF) and multipart, relayed directly and through the cache', async () => {
    let go!: () => void
    const released = new Promise<void>((r) => (go = r))
    const raw = await startRawBackend((req, res: ServerResponse) => {
      const q = new URL(req.url!, 'http://x').searchParams
      const kind = q.get('kind') as Kind
      const k = Number(q.get('k'))
      const text = Buffer.from(KINDS[kind].text)
      res.writeHead(200, { 'content-type': KINDS[kind].type })
      void (async () => {
        // Before the split: all but the last 6 bytes at once, then those one chunk each.
        const bytewiseFrom = Math.max(0, k - 6)
        if (bytewiseFrom > 0) res.write(text.subarray(0, bytewiseFrom))
        for (let i = bytewiseFrom; i < k; i++) {
          res.write(text.subarray(i, i + 1))
          await tick()
        }
        await released
        if (res.destroyed) return
        if (q.get('rest') === 'whole') res.write(text.subarray(k))
        else
          for (let i = k; i < text.length && !res.destroyed; i++) {
            res.write(text.subarray(i, i + 1))
            await tick()
          }
      })()
    })
    const p = await startTestProxy({
      shutdown: { drainTimeoutMs: 8000, idleGraceMs: 0 },
      upstreams: { b: { url: raw.url, connections: 1024 } },
      routes: [
        { name: 'g', match: { pathPrefix: '/g/' }, upstream: 'b', type: 'graphql' },
        { name: 'c', match: { pathPrefix: '/c/' }, upstream: 'b', type: 'graphql', filters: [{ name: 'cache', requireTenant: false }] },
      ],
    } as never)
    const agent = new Agent({ connections: 1024 })
    try {
      type Case = { route: string; kind: Kind; k: number; rest: string; atOnce: boolean }
      const cases: Case[] = []
      for (const kind of Object.keys(KINDS) as Kind[]) {
        const [first, second] = boundaries(kind)
        // Offsets around the first boundary and the second (the first event's end for multipart,
        // whose first boundary is the opening delimiter), every one.
        const ks = new Set<number>()
        for (let k = 1; k <= first! + 8; k++) ks.add(k)
        for (let k = second! - 8; k <= second! + 8; k++) ks.add(k)
        for (const k of ks) for (const route of ['g', 'c']) for (const rest of ['whole', 'bytes']) cases.push({ route, kind, k, rest, atOnce: boundaries(kind).includes(k) })
      }
      const reads = cases.map(async (c) => {
        const res = await request(`${p.url}/${c.route}/graphql?kind=${c.kind}&k=${c.k}&rest=${c.rest}`, {
          dispatcher: agent,
          method: 'POST',
          headers: { accept: c.kind === 'multipart' ? 'multipart/mixed' : 'text/event-stream', 'content-type': 'application/json' },
          body: JSON.stringify({ query: 'subscription { x }' }),
        })
        expect(res.statusCode).toBe(200)
        let text = ''
        let arrived!: () => void
        const all = new Promise<void>((r) => (arrived = r))
        const done = (async () => {
          try {
            for await (const chunk of res.body) {
              text += (chunk as Buffer).toString('latin1')
              if (text.length >= c.k) arrived()
            }
            return { text, error: undefined as unknown }
          } catch (error) {
            return { text, error }
          } finally {
            arrived()
          }
        })()
        return { c, all, done }
      })
      const streams = await Promise.all(reads)
      // Every split's first part has reached its client: the proxy relayed (and saw) it.
      await Promise.all(streams.map((s) => s.all))
      const closing = p.close()
      // Those split at a boundary end at once; once they have, the drain is under way everywhere.
      await Promise.all(streams.filter((s) => s.c.atOnce).map((s) => s.done))
      go()
      const ended = await Promise.all(streams.map(async (s) => ({ c: s.c, ...(await s.done) })))
      await closing
      const wrong = ended.filter((e) => e.error !== undefined || e.text !== expected(e.c.kind, e.c.k))
      expect(wrong.map((e) => ({ ...e.c, got: JSON.stringify(e.text), want: JSON.stringify(expected(e.c.kind, e.c.k)), error: String(e.error ?? '') }))).toEqual([])
      expect(p.logs.find('subscription stream ended: gateway draining')).toHaveLength(cases.length)
      expect(p.logs.find('upstream failed mid-response')).toHaveLength(0)
    } finally {
      go()
      await agent.close()
      await p.close()
      await raw.close()
    }
  }, 60_000)
})
