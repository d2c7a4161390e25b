// Sweep 18, shared upstream connections:
// 1. A shared stream (a wider sharing scope: dedupClaims) rode the connection opened with the
//    credentials of whoever opened it, for its whole life. Once that first token had expired (or
//    its holder left), a backend restart made the gateway reconnect with it — refused, for every
//    sharer, although the others held valid tokens. Now, after a drop, the stream moves to the
//    connection of the subscriber that joined last among those still attached.
// 2. subscriptions.upstream timings (keepAliveMs, connectTimeoutMs, retry*) reached only the
//    upstream connections opened after a reload: graphql-ws kept the values it was created with.
//    Now pooled connections take them: a pending ping (or ack wait, silence, backoff) is re-armed
//    as if it had been armed with the new value, later cycles use it.
import { randomBytes } from 'node:crypto'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { CursorCodec, STREAM_ID_BYTES } from '../../../proxy/subscriptions/cursor.ts'
import type { QueuedEntry } from '../../../proxy/subscriptions/delivery-queue.ts'
import { HubMetrics } from '../../../proxy/subscriptions/metrics.ts'
import { Stream, type StreamSubscriber } from '../../../proxy/subscriptions/stream.ts'
import { UpstreamPool } from '../../../proxy/subscriptions/upstream.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { startTcpRelay, type TcpRelay } from '../../helpers/tcp-relay.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

class Sharer implements StreamSubscriber {
  streamIndex = -1
  lastCursor: string | null = null
  readonly got: QueuedEntry[] = []
  push(entry: QueuedEntry): void {
    this.got.push(entry)
  }
  replayFrom(): void {}
  get events(): number {
    return this.got.filter((e) => e.kind === 'event').length
  }
}

describe('a shared stream reconnects with the credentials of a subscriber still attached', () => {
  let be: SubscriptionBackend
  let pool: UpstreamPool
  const settings = { retryInitialMs: 50, retryMaxMs: 200, connectTimeoutMs: 2_000, keepAliveMs: 0, maxMessageBytes: 1 << 20 }

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    pool = new UpstreamPool(new HubMetrics(new Registry()), pino({ level: 'silent' }))
  })
  afterAll(async () => {
    pool?.closeAll()
    await be?.close()
  })

  it('the opener left and the backend restarts: the stream resubscribes over a connection with the token of the sharer that joined last', async () => {
    const wsUrl = `${be.url.replace(/^http/, 'ws')}/graphql`
    const opener = (token: string) => () => pool.get(`cred-${token}`, wsUrl, { authorization: `Bearer ${token}` }, { authorization: `Bearer ${token}` }, settings)
    const openA = opener('A-expiring')
    const openB = opener('B-fresh')
    const codec = new CursorCodec([randomBytes(32)])
    let closed = false
    const stream = new Stream({
      key: 'k',
      streamId: 'ab'.repeat(STREAM_ID_BYTES),
      codec: () => codec,
      upstream: openA(),
      payload: { query: EVENTS('shared'), operationName: null, variables: null, extensions: null },
      maxEvents: 100,
      maxAgeMs: 60_000,
      maxBytes: 1 << 20,
      lingerMs: 0,
      resume: false,
      redis: undefined,
      metrics: new HubMetrics(new Registry()),
      logger: pino({ level: 'silent' }),
      onClosed: () => void (closed = true),
    })
    stream.start()
    const a = new Sharer()
    const b = new Sharer()
    stream.attach(a, undefined, openA)
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'shared').length === 1, 5_000, 'the upstream subscribe')
    expect(be.connections.at(-1)!.headers.authorization).toBe('Bearer A-expiring')
    stream.attach(b, undefined, openB)
    be.publish('shared')
    await waitUntil(() => a.events === 1 && b.events === 1, 5_000, 'the first event to both')
    // the opener leaves: nothing changes while the connection is up (no new upstream subscription)
    stream.detach(a)
    be.publish('shared')
    await waitUntil(() => b.events === 2, 5_000, 'the second event')
    expect(be.connections).toHaveLength(1)

    // backend restart: the reconnect must not present the first subscriber's (expired) token
    await be.stop()
    await be.start()
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'shared').length === 2, 10_000, 'the resubscribe after the restart')
    const last = be.connections.at(-1)!
    expect(last.headers.authorization).toBe('Bearer B-fresh')
    expect(last.params).toEqual({ authorization: 'Bearer B-fresh' })
    expect(be.connections.slice(1).every((c) => c.headers.authorization === 'Bearer B-fresh')).toBe(true)
    // the stream carries on there: a new epoch (a gap for the client), then the events; the old
    // connection went with its last operation
    be.publish('shared')
    await waitUntil(() => b.events === 3, 5_000, 'the event after the restart')
    expect(b.got.filter((e) => e.kind === 'epoch')).toHaveLength(1)
    expect(b.got.some((e) => e.kind === 'complete' || e.kind === 'error')).toBe(false)
    expect(closed).toBe(false)
    await waitUntil(() => pool.size === 1, 5_000, 'the first connection released')
    stream.detach(b)
    expect(closed).toBe(true)
  })

  it('sharers with the same credentials: the stream stays on its connection (one reconnect, no move)', async () => {
    const wsUrl = `${be.url.replace(/^http/, 'ws')}/graphql`
    const open = () => pool.get('cred-same', wsUrl, { authorization: 'Bearer same' }, undefined, settings)
    const codec = new CursorCodec([randomBytes(32)])
    const conn = open()
    const stream = new Stream({
      key: 'k2',
      streamId: 'cd'.repeat(STREAM_ID_BYTES),
      codec: () => codec,
      upstream: conn,
      payload: { query: EVENTS('same'), operationName: null, variables: null, extensions: null },
      maxEvents: 100,
      maxAgeMs: 60_000,
      maxBytes: 1 << 20,
      lingerMs: 0,
      resume: false,
      redis: undefined,
      metrics: new HubMetrics(new Registry()),
      logger: pino({ level: 'silent' }),
      onClosed: () => undefined,
    })
    stream.start()
    const a = new Sharer()
    const b = new Sharer()
    stream.attach(a, undefined, open)
    stream.attach(b, undefined, open)
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'same').length === 1, 5_000, 'the upstream subscribe')
    stream.detach(a)
    const before = be.connections.length
    await be.stop()
    await be.start()
    await waitUntil(() => be.subscribes.filter((s) => s.channel === 'same').length === 2, 10_000, 'the resubscribe after the restart')
    be.publish('same')
    await waitUntil(() => b.events === 1, 5_000, 'the event after the restart')
    expect(conn.up).toBe(true)
    expect(be.connections.length - before).toBe(1)
    stream.close()
  })
})

describe('upstream timings changed while a pooled connection waits out its reconnect backoff', () => {
  it('the wait is re-timed with the new retry settings (same jitter) instead of the old 15–30 s', async () => {
    const be = await startSubscriptionBackend()
    const pool = new UpstreamPool(new HubMetrics(new Registry()), pino({ level: 'silent' }))
    try {
      const wsUrl = `${be.url.replace(/^http/, 'ws')}/graphql`
      const slow = { retryInitialMs: 30_000, retryMaxMs: 60_000, connectTimeoutMs: 2_000, keepAliveMs: 0, maxMessageBytes: 1 << 20 }
      const conn = pool.get('slow', wsUrl, {}, undefined, slow)
      const got: unknown[] = []
      conn.subscribe({ query: EVENTS('backoff') }, { next: (v) => void got.push(v), error: (e) => void got.push({ error: e }), complete: () => void got.push('complete') })
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'backoff').length === 1, 5_000, 'the upstream subscribe')
      await be.stop()
      await be.start()
      // the connection now waits 15–30 s before its first reconnect; a reload shortens the retry settings
      await new Promise((r) => setTimeout(r, 100))
      pool.get('other', wsUrl, {}, undefined, { ...slow, retryInitialMs: 50, retryMaxMs: 200 })
      await waitUntil(() => be.subscribes.filter((s) => s.channel === 'backoff').length === 2, 8_000, 'the reconnect with the new backoff')
      be.publish('backoff')
      await waitUntil(() => got.length === 1, 5_000, 'the event after the reconnect')
      expect(got[0]).toMatchObject({ data: { events: { seq: 1 } } })
    } finally {
      pool.closeAll()
      await be.close()
    }
  })
})

describe('a reload of subscriptions.upstream timings reaches upstream connections already open', () => {
  let be: SubscriptionBackend
  let relay: TcpRelay
  let p: TestProxy
  const doc = (keepAliveMs: number) => ({
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    workers: 1,
    subscriptions: { upstream: { keepAliveMs, connectTimeoutMs: 500, retryInitialMs: 50, retryMaxMs: 200 } },
    routes: [{ name: 'gql', upstream: `http://127.0.0.1:${relay.port}`, websocket: { mode: 'terminate' as const } }],
  })

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    relay = await startTcpRelay(be.port)
    // a ping every minute: a frozen upstream would go unnoticed for over a minute
    p = await startTestProxy(doc(60_000))
  })
  afterAll(async () => {
    await p?.close()
    await relay?.close()
    await be?.close()
  })

  it('a shorter keepAliveMs after the reload: the live connection pings at the new interval, and a frozen upstream is dropped and reconnected', async () => {
    const c = new GqlClient(`ws://127.0.0.1:${p.port}/graphql`)
    try {
      const s = c.subscribe(EVENTS('ka'))
      await waitUntil(() => be.subscribes.filter((x) => x.channel === 'ka').length === 1, 5_000, 'the upstream subscribe')
      expect(await p.applyConfig(validateConfig(doc(200)))).toMatchObject({ ok: true })
      // the worker's next upstream operation (same credentials: the same connection) carries the new config
      const s2 = c.subscribe(EVENTS('ka2'))
      await waitUntil(() => be.subscribes.filter((x) => x.channel === 'ka2').length === 1, 5_000, 'the second upstream subscribe')
      expect(be.connections).toHaveLength(1)
      // a healthy upstream is pinged and answers: never dropped
      await new Promise((r) => setTimeout(r, 800))
      expect(be.connections).toHaveLength(1)
      relay.frozen = true
      // a ping within 200 ms, no answer within max(200, 500) ms: dropped (60 s with the old value)
      await waitUntil(() => p.logs.find('upstream did not answer a keep-alive ping: dropping the connection').length === 1, 8_000, 'the silent connection dropped')
      relay.frozen = false
      await waitUntil(() => be.subscribes.filter((x) => x.channel === 'ka').length === 2, 8_000, 'the resubscribe after the drop')
      be.publish('ka', { note: 'after' })
      await s.received.wait((r) => r.events.some((e) => e.data!.events!.note === 'after'), 5_000, 'the event after the reconnect')
      expect(s.received.gaps.map((g) => g.reason)).toEqual(['epoch'])
      expect(s.received.error).toBeUndefined()
      expect(s2.received.error).toBeUndefined()
    } finally {
      await c.dispose()
    }
  })
})
