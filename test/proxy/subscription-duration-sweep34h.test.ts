// Sweep 34h: a GraphQL subscription relayed over SSE lives as long as its client listens (sweep
// 34f), and its whole lifetime is observed in igw_request_duration_seconds. One sent as a
// persisted id the backend resolves (igw cannot type it) was observed under op="none", among the
// requests: an hour-long stream landed in +Inf and skewed the dashboards' p95 and 30-day latency
// SLO, which excluded only op="subscription". A relayed stream is now always op="subscription",
// and the dashboards' request-latency queries exclude it.
import type { AddressInfo } from 'node:net'
import { createServer, type Server } from 'node:http'
import { createSchema, createYoga, Repeater } from 'graphql-yoga'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dashboards } from '../../deploy/observability/dashboards/build.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

// A real graphql-yoga backend that resolves persisted ids itself (as its persisted-operations
// plugin does): igw, with no persisted filter on the route, sees no document.
const STORE: Record<string, string> = { ticks: 'subscription { tick }', hello: '{ hello }' }
let server: Server
let backend: string
let p: TestProxy
beforeAll(async () => {
  const yoga = createYoga({
    schema: createSchema({
      typeDefs: 'type Query { hello: String! } type Subscription { tick: Int! }',
      resolvers: {
        Query: { hello: () => 'world' },
        Subscription: {
          tick: {
            subscribe: () =>
              new Repeater<{ tick: number }>(async (push, stop) => {
                let n = 0
                const t = setInterval(() => void push({ tick: ++n }), 50)
                await stop
                clearInterval(t)
              }),
          },
        },
      },
    }),
    logging: false,
    plugins: [
      {
        onParams({ params, setParams }) {
          const id = (params.extensions?.persistedQuery as { sha256Hash?: string } | undefined)?.sha256Hash
          if (params.query === undefined && id !== undefined) setParams({ ...params, query: STORE[id] })
        },
      },
    ],
  })
  server = createServer((req, res) => void yoga.handle(req, res))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  backend = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  p = await startTestProxy({ routes: [{ name: 'g', upstream: backend, type: 'graphql' }] } as never)
})
afterAll(async () => {
  await p?.close()
  server?.closeAllConnections()
  await new Promise((r) => server?.close(r))
})

const persisted = (id: string) => JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: id } } })

/** Listens to an SSE subscription until `events` have come, then hangs up: how long it listened. */
async function listen(body: string, events: number): Promise<number> {
  const ac = new AbortController()
  const started = performance.now()
  const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { accept: 'text/event-stream', 'content-type': 'application/json' }, body, signal: ac.signal })
  expect(res.statusCode).toBe(200)
  expect(res.headers['content-type']).toMatch(/^text\/event-stream/)
  let text = ''
  try {
    for await (const c of res.body) {
      text += (c as Buffer).toString()
      if ((text.match(/"tick":/g) ?? []).length >= events) break
    }
  } finally {
    ac.abort()
  }
  return performance.now() - started
}

async function count(op: string): Promise<number> {
  const text = await (await fetch(`${p.adminUrl}/metrics`)).text()
  return metricSum(text, 'igw_request_duration_seconds_count', `op="${op}"`)
}

describe('igw_request_duration_seconds for a subscription relayed over SSE', () => {
  it('a persisted id igw cannot type: observed as op="subscription", not among untyped requests', async () => {
    const [none0, sub0] = [await count('none'), await count('subscription')]
    const ms = await listen(persisted('ticks'), 6)
    expect(ms).toBeGreaterThan(200) // (6 events 50 ms apart)
    await expect.poll(() => count('subscription'), { timeout: 5000, interval: 50 }).toBe(sub0 + 1)
    expect(await count('none')).toBe(none0)
    // Its sum holds the whole time it was listened to.
    const text = await (await fetch(`${p.adminUrl}/metrics`)).text()
    expect(metricSum(text, 'igw_request_duration_seconds_sum', 'op="subscription"')).toBeGreaterThan(0.2)
  })

  it('a typed subscription is op="subscription"; a persisted id answered with JSON stays op="none"', async () => {
    const sub0 = await count('subscription')
    await listen(JSON.stringify({ query: 'subscription { tick }' }), 2)
    await expect.poll(() => count('subscription'), { timeout: 5000, interval: 50 }).toBe(sub0 + 1)

    const none0 = await count('none')
    const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: persisted('hello') })
    expect(await res.body.json()).toEqual({ data: { hello: 'world' } })
    await expect.poll(() => count('none'), { timeout: 5000, interval: 50 }).toBe(none0 + 1)
    expect(await count('subscription')).toBe(sub0 + 1)
  })
})

describe('the dashboards', () => {
  it('measure requests, not streams: every igw_request_duration_seconds query excludes op="subscription", said in the panel', () => {
    const panels = dashboards.flatMap((d) => d.rows.flatMap((r) => r.panels))
    const latency = panels.filter((pl) => pl.targets.some((t) => t.expr.includes('igw_request_duration_seconds')))
    expect(latency.length).toBeGreaterThan(0)
    for (const pl of latency) {
      for (const t of pl.targets) {
        for (const sel of t.expr.match(/igw_request_duration_seconds_\w+\{[^}]*\}/g) ?? []) expect(sel, pl.title).toMatch(/op!="subscription"|op="query"/)
      }
      expect(pl.description, pl.title).toMatch(/subscription/i)
    }
  })
})
