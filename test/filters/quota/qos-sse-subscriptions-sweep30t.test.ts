// Sweep 30t: a GraphQL subscription relayed over HTTP (SSE, graphql-yoga's default transport)
// counted as a request in flight for its whole life, while docs/quota.md says subscriptions are
// admitted or shed by the load now and do not count in flight: `maxInFlight` open streams (idle,
// one event a second) made the proxy shed every tier, gold included. Real proxy, the real yoga
// demo backend, undici clients.
import type { ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

let be: DemoBackend
/** Holds every request until the test answers it: load that stays in flight as long as needed. */
let holder: RawBackend
const held: ServerResponse[] = []
beforeAll(async () => {
  be = await startDemoBackend({ port: 0 })
  holder = await startRawBackend((_req, res) => void held.push(res))
})
afterAll(async () => {
  await be?.close()
  await holder?.close()
})

const post = (url: string, tenant: string, query: string, accept = 'application/json') =>
  request(`${url}/graphql`, { method: 'POST', headers: { 'x-tenant-id': tenant, 'content-type': 'application/json', accept }, body: JSON.stringify({ query }) })

/** Two SSE subscriptions of gold tenant `g`, open and live at the backend (kept in `streams`). */
async function openTwo(url: string, streams: Awaited<ReturnType<typeof post>>[]): Promise<void> {
  for (let i = 0; i < 2; i++) {
    const s = await post(url, 'g', 'subscription { countdown(from: 60, intervalMs: 1000) }', 'text/event-stream')
    expect(s.statusCode).toBe(200)
    expect(s.headers['content-type']).toMatch(/^text\/event-stream/)
    streams.push(s)
  }
  await expect.poll(() => be.liveSubscriptions(), { timeout: 3000, interval: 20 }).toBe(2)
}

describe('QoS and subscriptions over HTTP (sweep 30t)', () => {
  it('open SSE subscriptions are not held in flight: they do not shed later requests', async () => {
    const p = await startTestProxy({
      tenants: { g: { tier: 'gold' } },
      quotas: { qos: { maxInFlight: 2 } },
      routes: [{ name: 'g', match: { pathPrefix: '/' }, upstream: be.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    const streams: Awaited<ReturnType<typeof post>>[] = []
    try {
      await openTwo(p.url, streams)
      const metrics = await (await request(`${p.adminUrl}/metrics`)).body.text()
      expect(metrics).toMatch(/^igw_quota_inflight 0$/m)
      const q = await post(p.url, 'g', '{ __typename }')
      expect(q.statusCode).toBe(200)
      expect(await q.body.json()).toEqual({ data: { __typename: 'Query' } })
    } finally {
      for (const s of streams) s.body.destroy()
      await p.close()
    }
  })

  it('open SSE subscriptions do not hold the tenant\'s graphql concurrency slots', async () => {
    const p = await startTestProxy({
      tenants: { g: { tier: 'gold' } },
      quotas: { tenants: { g: { graphql: { maxConcurrent: 2 } } } },
      routes: [{ name: 'g', match: { pathPrefix: '/' }, upstream: be.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    const streams: Awaited<ReturnType<typeof post>>[] = []
    try {
      await openTwo(p.url, streams)
      const q = await post(p.url, 'g', '{ __typename }')
      expect(q.statusCode).toBe(200)
      expect(await q.body.json()).toEqual({ data: { __typename: 'Query' } })
    } finally {
      for (const s of streams) s.body.destroy()
      await p.close()
    }
  })

  it('a subscription over HTTP is still shed by the load of requests in flight', async () => {
    const p = await startTestProxy({
      tenants: { b: { tier: 'bronze' }, g: { tier: 'gold' } },
      mode: 'ingress',
      quotas: { qos: { maxInFlight: 1, retryAfterSeconds: 2 } },
      routes: [
        { name: 'hold', match: { pathPrefix: '/hold' }, upstream: holder.url, filters: [{ name: 'tenant' }, { name: 'quota' }] },
        { name: 'g', match: { pathPrefix: '/' }, upstream: be.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'quota' }] },
      ],
    })
    try {
      // A gold request in flight: the one unit of maxInFlight.
      const gold = request(`${p.url}/hold`, { method: 'POST', headers: { 'x-tenant-id': 'g', 'content-type': 'application/json' }, body: '{"query":"{ a }"}' })
      await waitUntil(() => held.length === 1, 5000, 'the gold request in flight')
      const s = await post(p.url, 'b', 'subscription { countdown(from: 3, intervalMs: 10) }', 'text/event-stream')
      expect(s.statusCode).toBe(503)
      expect(s.headers['retry-after']).toBe('2')
      expect(((await s.body.json()) as { errors: { extensions: { code: string; tier: string } }[] }).errors[0]!.extensions).toMatchObject({ code: 'OVERLOADED', tier: 'bronze' })
      for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
      expect((await gold).statusCode).toBe(200)
    } finally {
      for (const res of held.splice(0)) res.end('{}')
      await p.close()
    }
  })
})
