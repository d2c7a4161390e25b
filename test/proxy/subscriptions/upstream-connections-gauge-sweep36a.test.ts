// Sweep 36a: igw_subscription_upstream_connections counts the WebSockets open to each upstream
// (label `upstream`: its configured name, as igw_upstream_healthy's; an inline route URL is named
// by itself), from the socket's open to its close. Before, it counted pooled
// connection objects in one unlabelled number: a connection waiting to reconnect to a dead
// upstream (no socket at all) still read 1, and an operator with two upstreams could not tell
// which one had lost its connections.
// Real proxy (supervisor + worker threads), real graphql-yoga backends over graphql-ws, real
// graphql-ws clients. Failed on the code before the fix (no `upstream` label: 0 where 1 was due).
import { afterEach, describe, expect, it } from 'vitest'
import { createClient, type Client } from 'graphql-ws'
import WebSocket from 'ws'
import { upstreamLabel } from '../../../proxy/subscriptions/upstream.ts'
import { metricSum, startTestProxy, testProxyConfig, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, Received, waitUntil } from './clients.ts'

const GAUGE = 'igw_subscription_upstream_connections'

/** A graphql-ws client whose handshake names `host`: the proxy routes on it (ingress mode). */
function hostClient(proxy: TestProxy, host: string): Client {
  class HostWebSocket extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols, { headers: { host } })
    }
  }
  return createClient({ url: `ws://127.0.0.1:${proxy.port}/graphql`, webSocketImpl: HostWebSocket, retryAttempts: 0, lazy: true })
}

function subscribe(c: Client, channel: string): Received {
  const r = new Received()
  c.subscribe({ query: EVENTS(channel) }, { next: (v) => void r.payloads.push(v as never), error: (e) => (r.error = e), complete: () => (r.completed = true) })
  return r
}

/** Every series of the gauge: label value → value. */
function series(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${GAUGE}{`) && !line.startsWith(`${GAUGE} `)) continue
    const label = /upstream="([^"]*)"/.exec(line)?.[1] ?? ''
    out.set(label, Number(line.slice(line.lastIndexOf(' ') + 1)))
  }
  return out
}

const cleanups: (() => Promise<unknown> | unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

// Route a names its upstream inline (label: the URL), route b through `upstreams.orders` (label: orders).
const B = 'orders'

async function setup(workers = 1): Promise<{ a: SubscriptionBackend; b: SubscriptionBackend; proxy: TestProxy; gauge: (label: string) => Promise<number> }> {
  const a = await startSubscriptionBackend()
  cleanups.push(() => a.close())
  const b = await startSubscriptionBackend()
  cleanups.push(() => b.close())
  const proxy = await startTestProxy({
    mode: 'ingress',
    workers,
    subscriptions: { upstream: { retryInitialMs: 50, retryMaxMs: 200, lingerMs: 300 } },
    upstreams: { [B]: { url: b.url } },
    routes: [
      { name: 'a', match: { host: 'a.test' }, upstream: a.url, websocket: { mode: 'terminate' }, filters: [] },
      { name: 'b', match: { host: 'b.test' }, upstream: B, websocket: { mode: 'terminate' }, filters: [] },
    ],
  })
  cleanups.push(() => proxy.close())
  const gauge = async (label: string) => metricSum(await proxy.metricsText(), GAUGE, `upstream="${label}"`)
  return { a, b, proxy, gauge }
}

describe('igw_subscription_upstream_connections: open upstream WebSockets, per upstream', () => {
  it('without a configured name (a pool on its own), the label is the dialled origin: no path, query or userinfo', () => {
    expect(upstreamLabel('ws://127.0.0.1:4000/graphql?token=secret')).toBe('http://127.0.0.1:4000')
    expect(upstreamLabel('wss://user:pw@api.example.com:443/a/b')).toBe('https://api.example.com')
    expect(upstreamLabel('ws://[::1]:8080/')).toBe('http://[::1]:8080')
  })

  it('a dead upstream reads 0 while it waits to reconnect, the other keeps its count; back to 1 when it returns, 0 after the linger', async () => {
    const { a, b, proxy, gauge } = await setup()
    const ca = hostClient(proxy, 'a.test')
    const cb = hostClient(proxy, 'b.test')
    cleanups.push(() => ca.dispose(), () => cb.dispose())
    const ra = subscribe(ca, 'ga')
    const rb = subscribe(cb, 'gb')
    await waitUntil(() => a.subscribes.some((s) => s.channel === 'ga') && b.subscribes.some((s) => s.channel === 'gb'), 5_000, 'both upstream subscribes')
    a.publish('ga')
    b.publish('gb')
    await ra.wait((r) => r.events.length === 1)
    await rb.wait((r) => r.events.length === 1)
    const text = await proxy.metricsText()
    expect(series(text)).toEqual(new Map([[a.url, 1], [B, 1]]))
    // The label is the upstream's name, never the client's path or query.
    expect(text).toContain(`${GAUGE}{upstream="${a.url}"} 1`)
    expect(text).toContain(`${GAUGE}{upstream="${B}"} 1`)

    // Upstream a goes away: its connection waits to reconnect (refused on every attempt), with no socket.
    await a.stop()
    await waitUntil(async () => (await gauge(a.url)) === 0, 5_000, 'upstream a to read 0')
    await new Promise((r) => setTimeout(r, 400)) // a few refused reconnect attempts later, still 0
    expect(await gauge(a.url)).toBe(0)
    expect(await gauge(B)).toBe(1)
    expect(metricSum(await proxy.metricsText(), GAUGE)).toBe(1) // the waiting connection has no socket
    expect(ra.error).toBeUndefined() // the stream is still there, waiting for its upstream

    await a.start()
    await waitUntil(() => a.subscribes.filter((s) => s.channel === 'ga').length === 2, 5_000, 'the resubscribe on upstream a')
    await waitUntil(async () => (await gauge(a.url)) === 1, 5_000, 'upstream a to read 1 again')
    expect(await gauge(B)).toBe(1)
    expect(metricSum(await proxy.metricsText(), 'igw_subscription_upstream_reconnects_total')).toBeGreaterThanOrEqual(1)

    // Every client gone: the streams linger 300 ms, then their connections close.
    await ca.dispose()
    await cb.dispose()
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscription_upstreams') === 0, 5_000, 'the streams to end after the linger')
    await waitUntil(async () => {
      const s = series(await proxy.metricsText())
      return s.get(a.url) === 0 && s.get(B) === 0
    }, 5_000, 'both upstreams to read 0')
  })

  it('a connection disposed while it waits to reconnect is not taken away twice: the gauge stays at 0, never below', async () => {
    const { a, b, proxy, gauge } = await setup()
    const ca = hostClient(proxy, 'a.test')
    const cb = hostClient(proxy, 'b.test')
    cleanups.push(() => ca.dispose(), () => cb.dispose())
    const ra = subscribe(ca, 'da')
    const rb = subscribe(cb, 'db')
    await waitUntil(() => a.subscribes.some((s) => s.channel === 'da') && b.subscribes.some((s) => s.channel === 'db'), 5_000, 'both upstream subscribes')
    a.publish('da')
    b.publish('db')
    await ra.wait((r) => r.events.length === 1)
    await rb.wait((r) => r.events.length === 1)
    expect(await gauge(a.url)).toBe(1)

    await a.stop()
    await waitUntil(async () => (await gauge(a.url)) === 0, 5_000, 'upstream a to read 0')
    // Its last client leaves during the outage: the stream lingers, then the connection is
    // disposed in the middle of its reconnect backoff.
    await ca.dispose()
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscription_upstreams') === 1, 5_000, 'stream a to end after the linger')
    await new Promise((r) => setTimeout(r, 300))
    expect(await gauge(a.url)).toBe(0)
    // Back up: nothing dials it any more (the disposed connection's pending attempt opens no socket).
    await a.start()
    await new Promise((r) => setTimeout(r, 400))
    const s = series(await proxy.metricsText())
    expect(s.get(a.url)).toBe(0)
    expect(s.get(B)).toBe(1)
    for (const v of s.values()) expect(v).toBeGreaterThanOrEqual(0)
  })

  it('across worker threads the admin view sums each upstream\'s sockets; a reload that moves a route to another upstream counts the new one apart', async () => {
    const { a, b, proxy } = await setup(2)
    const clients: Client[] = []
    const received: Received[] = []
    // Several clients per upstream: the kernel spreads them over both threads, each thread
    // shares one connection per upstream (same credentials).
    for (let i = 0; i < 4; i++) {
      for (const [host, ch] of [['a.test', 'wa'], ['b.test', 'wb']] as const) {
        const c = hostClient(proxy, host)
        clients.push(c)
        cleanups.push(() => c.dispose())
        received.push(subscribe(c, ch))
      }
    }
    await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active') === 8, 10_000, 'eight client subscriptions')
    // Every handshake each backend took is one socket still open (no drop happened).
    await waitUntil(async () => {
      const s = series(await proxy.metricsText())
      return s.get(a.url) === a.connections.length && s.get(B) === b.connections.length
    }, 5_000, 'the summed gauge to match the sockets each backend accepted')
    expect(a.connections.length).toBeGreaterThanOrEqual(1)
    expect(a.connections.length).toBeLessThanOrEqual(2)

    // Route b now points at a third backend: new subscribes through it dial c; b's existing
    // streams keep their sockets until they end.
    const c3 = await startSubscriptionBackend()
    cleanups.push(() => c3.close())
    const doc = {
      mode: 'ingress' as const,
      workers: 2,
      subscriptions: { upstream: { retryInitialMs: 50, retryMaxMs: 200, lingerMs: 300 } },
      routes: [
        { name: 'a', match: { host: 'a.test' }, upstream: a.url, websocket: { mode: 'terminate' as const }, filters: [] },
        { name: 'b', match: { host: 'b.test' }, upstream: c3.url, websocket: { mode: 'terminate' as const }, filters: [] },
      ],
    }
    expect(await proxy.applyConfig(testProxyConfig(doc))).toMatchObject({ ok: true })
    const late = hostClient(proxy, 'b.test')
    clients.push(late)
    cleanups.push(() => late.dispose())
    const rl = subscribe(late, 'wc')
    await waitUntil(() => c3.subscribes.some((s) => s.channel === 'wc'), 5_000, 'the subscribe on the new upstream')
    c3.publish('wc')
    await rl.wait((r) => r.events.length === 1)
    await waitUntil(async () => (series(await proxy.metricsText()).get(c3.url) ?? -1) === c3.connections.length, 5_000, 'the new upstream counted under its own label')

    for (const c of clients) await c.dispose()
    await waitUntil(async () => {
      const s = series(await proxy.metricsText())
      return [...s.values()].every((v) => v === 0) && s.get(a.url) === 0 && s.get(c3.url) === 0
    }, 5_000, 'every upstream to read 0')
  })
})
