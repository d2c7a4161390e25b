// An upstream connection that goes silent without closing — a backend pod frozen (deadlocked,
// SIGSTOPped, its node partitioned away) behind a Service, whose kernel (or a middlebox) keeps
// the TCP connection open — must be noticed. The hub pings the upstream every keepAliveMs but
// never checked that anything came back: its streams stayed "live" forever, every client
// subscribed and hearing nothing, no gap, no reconnect to a healthy replica. Now a ping left
// unanswered (nothing at all received) for max(keepAliveMs, connectTimeoutMs) drops that
// connection like any outage: reconnect with backoff, resubscribe, an epoch gap to the clients.
import { createServer, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

interface Pipe {
  client: Socket
  backend: Socket
  frozen: boolean
}

/**
 * A TCP forwarder in front of the backend (a Service in front of its pods). freezeAll() makes every
 * connection open now go silent in both directions without closing it (a frozen pod); connections
 * made afterwards are forwarded normally (another, healthy pod).
 */
async function startForwarder(target: number): Promise<{ url: string; pipes: Pipe[]; freezeAll(): void; close(): Promise<void> }> {
  const pipes: Pipe[] = []
  const server: Server = createServer((client) => {
    const backend = new (client.constructor as typeof Socket)()
    const pipe: Pipe = { client, backend, frozen: false }
    pipes.push(pipe)
    client.on('error', () => undefined)
    backend.on('error', () => undefined)
    backend.connect(target, '127.0.0.1')
    client.on('data', (d) => void (pipe.frozen || backend.write(d)))
    backend.on('data', (d) => void (pipe.frozen || client.write(d)))
    // a frozen pod closes nothing: neither side's end reaches the other
    client.on('close', () => void (pipe.frozen || backend.destroy()))
    backend.on('close', () => void (pipe.frozen || client.destroy()))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    pipes,
    freezeAll: () => {
      for (const p of pipes) p.frozen = true
    },
    close: async () => {
      for (const p of pipes) {
        p.client.destroy()
        p.backend.destroy()
      }
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('subscription hub: an upstream connection that goes silent without closing', () => {
  let be: SubscriptionBackend
  let fwd: Awaited<ReturnType<typeof startForwarder>>
  let p: TestProxy

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    fwd = await startForwarder(be.port)
    p = await startTestProxy({
      subscriptions: { upstream: { keepAliveMs: 200, connectTimeoutMs: 500, retryInitialMs: 50, retryMaxMs: 200 } },
      routes: [{ name: 'gql', upstream: fwd.url, websocket: { mode: 'terminate' } }],
    })
  })
  afterAll(async () => {
    await p?.close()
    await fwd?.close()
    await be?.close()
  })

  it('is dropped once a ping goes unanswered: the hub reconnects (to a healthy replica), resubscribes, and its clients get an epoch gap, then the events', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`)
    const s = c.subscribe(EVENTS('frozen'))
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'frozen').length === 1, 5_000, 'the upstream subscribe')
    be.publish('frozen', { note: 'before' })
    await s.received.wait((r) => r.events.length === 1)
    // several keep-alive rounds go by: a healthy, idle upstream is never dropped
    await new Promise((r) => setTimeout(r, 1_000))
    const live = () => fwd.pipes.filter((x) => !x.client.destroyed).length
    expect(be.connections.length).toBe(1)
    expect(live()).toBe(1)
    expect(be.subscribes.filter((x) => x.channel === 'frozen').length).toBe(1)

    const pipesBefore = fwd.pipes.length
    fwd.freezeAll()
    be.publish('frozen', { note: 'lost while frozen' })
    // ping after ≤200 ms, no answer for 500 ms, a reconnect after ≤200 ms: well within 5 s
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'frozen').length === 2, 5_000, 'the resubscribe over a new connection')
    expect(fwd.pipes.length).toBe(pipesBefore + 1)
    expect(be.connections.length).toBe(2)
    await new Promise((r) => setTimeout(r, 200))
    be.publish('frozen', { note: 'after' })
    await s.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'after'), 5_000, 'the event after the reconnect')
    expect(s.received.events.map((e) => e.data!.events!.note)).toEqual(['before', 'after'])
    expect(s.received.gaps.map((g) => g.reason)).toEqual(['epoch'])
    expect(s.received.error).toBeUndefined()
    const m = await p.metricsText()
    expect(metricSum(m, 'igw_subscription_upstream_reconnects_total')).toBe(1)
    expect(p.logs.find('upstream did not answer a keep-alive ping: dropping the connection').length).toBe(1)
    await c.dispose()
  })
})
