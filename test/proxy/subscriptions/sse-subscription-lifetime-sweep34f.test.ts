// Sweep 34f: the lifetime of a GraphQL subscription relayed over HTTP (SSE, multipart) — no
// total deadline once its head is out (bodyIdleMs still bounds silence), and a drain ends it
// after the last whole event the client got. See also sse-journey-sweep34e.test.ts.
import type { ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'

const post = (url: string, accept: string, query: string) =>
  request(url, { method: 'POST', headers: { accept, 'content-type': 'application/json' }, body: JSON.stringify({ query }) })

/** A body read as text until it ends or fails: what arrived, and how it ended. */
async function readAll(body: AsyncIterable<Buffer>, onChunk?: (text: string) => void): Promise<{ text: string; error: unknown }> {
  let text = ''
  try {
    for await (const c of body) {
      text += c.toString('utf8')
      onChunk?.(text)
    }
    return { text, error: undefined }
  } catch (error) {
    return { text, error }
  }
}

/** The JSON of each part of a multipart/mixed body (graphql-yoga's boundary `-`), and whether it was closed. */
function parts(text: string): { results: unknown[]; closed: boolean } {
  const closed = text.endsWith('\r\n-----\r\n')
  const sections = text.split('\r\n---').slice(1) // (what precedes the first delimiter is the preamble)
  const results = sections.filter((s) => s.includes('\r\n\r\n')).map((s) => JSON.parse(s.slice(s.indexOf('\r\n\r\n') + 4)) as unknown)
  return { results, closed }
}

describe('a multipart subscription (Accept: multipart/mixed)', () => {
  // The demo backend answers subscriptions over SSE only: this one writes graphql-yoga's
  // multipart framing (its processMultipartResult), a part every `everyMs` up to `count`.
  let raw: RawBackend
  let open = 0
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const count = Number(new URL(req.url!, 'http://x').searchParams.get('count'))
      res.writeHead(200, { 'content-type': 'multipart/mixed; boundary="-"' })
      res.write('\r\n---')
      open++
      let n = 0
      const tick = setInterval(() => {
        const json = JSON.stringify({ data: { n: ++n } })
        res.write(`\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${json.length}\r\n\r\n${json}\r\n---`)
        if (n === count) {
          clearInterval(tick)
          res.end('--\r\n')
        }
      }, 300)
      res.on('close', () => (clearInterval(tick), open--))
    })
  })
  afterAll(async () => {
    await raw?.close()
  })

  it('outlives the route\'s totalMs', async () => {
    const p = await startTestProxy({ routes: [{ name: 'g', upstream: raw.url, type: 'graphql', timeouts: { totalMs: 700 } }] } as never)
    try {
      const res = await post(`${p.url}/graphql?count=4`, 'multipart/mixed', 'subscription { n }')
      const { text, error } = await readAll(res.body)
      expect(error).toBeUndefined()
      expect(parts(text)).toEqual({ results: [1, 2, 3, 4].map((n) => ({ data: { n } })), closed: true })
    } finally {
      await p.close()
    }
  })

  it('a drain ends it at once with the closing delimiter after its last whole part', async () => {
    // Held by the stream, the drain would last drainTimeoutMs: far above the bounds on the close
    // in these tests, which leave a loaded machine seconds (a passing run waits neither out).
    const p = await startTestProxy({ shutdown: { drainTimeoutMs: 15_000, idleGraceMs: 0 }, routes: [{ name: 'g', upstream: raw.url, type: 'graphql' }] } as never)
    const res = await post(`${p.url}/graphql?count=100`, 'multipart/mixed', 'subscription { n }')
    let first!: () => void
    const gotTwo = new Promise<void>((r) => (first = r))
    const read = readAll(res.body, (t) => parts(t).results.length >= 2 && first())
    await gotTwo
    const started = performance.now()
    await p.close()
    expect(performance.now() - started).toBeLessThan(5_000)
    const { text, error } = await read
    expect(error).toBeUndefined()
    const { results, closed } = parts(text)
    expect(closed).toBe(true)
    expect(results.length).toBeGreaterThanOrEqual(2)
    expect(results).toEqual(results.map((_, i) => ({ data: { n: i + 1 } })))
    await expect.poll(() => open, { timeout: 3000, interval: 20 }).toBe(0)
  })
})

describe('an SSE subscription from a backend that writes events in pieces', () => {
  it('a drain that finds an event half sent relays the rest of it, then ends the stream (never a partial event)', async () => {
    let upstreamClosed = false
    const raw = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('event: next\ndata: {"data":{"x":1}}\n\nevent: next\ndata: {"data":')
      const t = setTimeout(() => res.write('{"x":2}}\n\nevent: next\ndata: {"data":{"x":3}}\n\n'), 600)
      const t2 = setTimeout(() => res.end('event: complete\ndata:\n\n'), 20_000)
      res.on('close', () => {
        upstreamClosed = !res.writableEnded
        clearTimeout(t)
        clearTimeout(t2)
      })
    })
    const p = await startTestProxy({ shutdown: { drainTimeoutMs: 15_000, idleGraceMs: 0 }, routes: [{ name: 'g', upstream: raw.url, type: 'graphql' }] } as never)
    try {
      const res = await post(`${p.url}/graphql`, 'text/event-stream', 'subscription { x }')
      let first!: () => void
      const gotOne = new Promise<void>((r) => (first = r))
      const read = readAll(res.body, (t) => t.includes('"x":1') && first())
      await gotOne
      const started = performance.now()
      await p.close()
      const ms = performance.now() - started
      // Waited for the end of the event under way (600 ms), not for the drain's deadline.
      expect(ms).toBeGreaterThan(300)
      expect(ms).toBeLessThan(5_000)
      expect(await read).toEqual({ text: 'event: next\ndata: {"data":{"x":1}}\n\nevent: next\ndata: {"data":{"x":2}}\n\n', error: undefined })
      await expect.poll(() => upstreamClosed, { timeout: 3000, interval: 20 }).toBe(true)
      expect(p.logs.find('subscription stream ended: gateway draining')).toHaveLength(1)
      expect(p.logs.find('upstream failed mid-response')).toHaveLength(0)
    } finally {
      await p.close()
      await raw.close()
    }
  })

  it('through a route with a response phase (the cache), the same: past totalMs, then ended by a drain between events', async () => {
    const raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      let n = 0
      const tick = setInterval(() => res.write(`event: next\ndata: {"data":{"x":${++n}}}\n\n`), 200)
      res.on('close', () => clearInterval(tick))
    })
    const p = await startTestProxy({ shutdown: { drainTimeoutMs: 15_000, idleGraceMs: 0 }, routes: [{ name: 'g', upstream: raw.url, type: 'graphql', timeouts: { totalMs: 500 }, filters: [{ name: 'cache', requireTenant: false }] }] } as never)
    try {
      const res = await post(`${p.url}/graphql`, 'text/event-stream', 'subscription { x }')
      let first!: () => void
      const gotFive = new Promise<void>((r) => (first = r))
      const read = readAll(res.body, (t) => t.includes('"x":5') && first())
      await gotFive // (~1 s: past totalMs)
      const started = performance.now()
      await p.close()
      expect(performance.now() - started).toBeLessThan(5_000)
      const { text, error } = await read
      expect(error).toBeUndefined()
      expect(text).toMatch(/^(?:event: next\ndata: \{"data":\{"x":\d+\}\}\n\n)+$/)
      expect(p.logs.find('subscription stream ended: gateway draining')).toHaveLength(1)
    } finally {
      await p.close()
      await raw.close()
    }
  })

  it('with totalMs lifted, bodyIdleMs still cuts one that goes silent', async () => {
    const held: ServerResponse[] = []
    const raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      held.push(res)
      let n = 0
      const tick = setInterval(() => {
        res.write(`event: next\ndata: {"data":{"x":${++n}}}\n\n`)
        if (n === 4) clearInterval(tick) // then silence
      }, 250)
      res.on('close', () => clearInterval(tick))
    })
    const p = await startTestProxy({ routes: [{ name: 'g', upstream: raw.url, type: 'graphql', timeouts: { totalMs: 600, bodyIdleMs: 700 } }] } as never)
    try {
      const started = performance.now()
      const res = await post(`${p.url}/graphql`, 'text/event-stream', 'subscription { x }')
      const { text, error } = await readAll(res.body)
      // All four events (the last at ~1 s, past totalMs), then cut ~bodyIdleMs after it.
      expect(text.match(/"x":\d/g)).toEqual(['"x":1', '"x":2', '"x":3', '"x":4'])
      expect(error).toBeDefined()
      expect(performance.now() - started).toBeGreaterThan(1500)
      const metrics = await (await request(`${p.adminUrl}/metrics`)).body.text()
      expect(metricSum(metrics, 'igw_proxy_errors_total', 'UPSTREAM_TIMEOUT')).toBe(1)
    } finally {
      for (const r of held) r.destroy()
      await p.close()
      await raw.close()
    }
  })
})

describe('streams that are not subscriptions keep the route\'s totalMs', () => {
  it('a query answered over SSE (graphql-sse sends every operation so)', async () => {
    const raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const tick = setInterval(() => res.write(':\n\n'), 100) // keep-alive while the query "resolves"
      res.on('close', () => clearInterval(tick))
    })
    const p = await startTestProxy({ routes: [{ name: 'g', upstream: raw.url, type: 'graphql', timeouts: { totalMs: 700 } }] } as never)
    try {
      const started = performance.now()
      const res = await post(`${p.url}/graphql`, 'text/event-stream', '{ hello }')
      const { error } = await readAll(res.body)
      expect(error).toBeDefined()
      expect(performance.now() - started).toBeLessThan(5_000) // totalMs 700; not lifted, the stream never ends
    } finally {
      await p.close()
      await raw.close()
    }
  })

  it('an event stream on an http route (opaque: its totalMs is the operator\'s bound; 0 lifts it)', async () => {
    const raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      const tick = setInterval(() => res.write('data: tick\n\n'), 100)
      res.on('close', () => clearInterval(tick))
    })
    const p = await startTestProxy({ routes: [{ name: 'app', upstream: raw.url, type: 'http', timeouts: { totalMs: 700 } }] } as never)
    try {
      const started = performance.now()
      const { error } = await readAll((await request(`${p.url}/events`, { headers: { accept: 'text/event-stream' } })).body)
      expect(error).toBeDefined()
      expect(performance.now() - started).toBeLessThan(5_000) // totalMs 700; not lifted, the stream never ends
    } finally {
      await p.close()
      await raw.close()
    }
  })
})
