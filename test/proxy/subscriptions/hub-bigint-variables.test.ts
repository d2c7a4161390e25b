// Subscriptions whose variables hold integers beyond 2^53 (a backend with 64-bit ids): JSON.parse
// reads 9007199254740993 as …992, so the hub used to give both one dedup key — the second client
// shared the first's upstream stream and received another entity's events — and sent the rounded
// value upstream, so even a lone subscriber to …993 was subscribed to …992. The hub now keys and
// forwards such subscribes with the client's digits (JSON.rawJSON): …993 and …992 are two streams
// (two stream ids: cursors and replay logs apart), two subscribes with one big id still share one,
// and safe ids dedup as before. The upstream here is graphql-transport-ws by hand over `ws`: it
// reads the id from the raw message text, as a backend with 64-bit integers would.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { canonicalJson, streamKey } from '../../../proxy/subscriptions/dedup-key.ts'
import { compileEventFilter } from '../../../proxy/subscriptions/event-filter.ts'
import { parseClientMessage, TOPICS, TRANSPORT_WS, type SubscribeCommand } from '../../../proxy/subscriptions/protocols.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { GqlClient, RawClient, waitUntil, type NextPayload } from './clients.ts'

const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON

const BIG_A = '9007199254740993' // 2^53 + 1: JSON.parse reads it as …992
const BIG_B = '9007199254740992' // 2^53
const BIG_SHARED = '9007199254740995' // JSON.parse reads it as …996
const BIG_CURSOR = '18446744073709551557' // a 64-bit unsigned id
const BIG_INIT_A = '9007199254741001'
const BIG_INIT_B = '9007199254741000'

const ENTITY = 'subscription Entity($id: ID!) { entity(id: $id) { id note } }'

interface UpstreamSubscribe {
  ws: WebSocket
  opId: string
  /** The root field the subscription asked for. */
  field: string
  /** The `id` variable as the text the upstream received (undefined: none). */
  rawId: string | undefined
  /** The whole subscribe message as received. */
  raw: string
  active: boolean
}

interface RawUpstream {
  url: string
  /** connection_init messages as received. */
  inits: string[]
  subscribes: UpstreamSubscribe[]
  /** Send an event naming `rawId` to every active subscription for it (and to every feed without an id). */
  emit(rawId: string, note: string): void
  close(): Promise<void>
}

/** A graphql-transport-ws backend with 64-bit ids: it reads `variables.id` from the raw text. */
async function startRawUpstream(): Promise<RawUpstream> {
  const inits: string[] = []
  const subscribes: UpstreamSubscribe[] = []
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ server, handleProtocols: (p) => (p.has('graphql-transport-ws') ? 'graphql-transport-ws' : false) })
  wss.on('connection', (ws) => {
    ws.on('message', (data) => {
      const raw = data.toString()
      // Only `type`, the operation id and the query text are taken from a parse (no numbers there).
      const msg = JSON.parse(raw) as { type: string; id?: string; payload?: { query?: string } }
      switch (msg.type) {
        case 'connection_init':
          inits.push(raw)
          ws.send('{"type":"connection_ack"}')
          return
        case 'ping':
          ws.send('{"type":"pong"}')
          return
        case 'subscribe': {
          const rawId = /"variables":\{"id":(-?[0-9][0-9.eE+-]*)/.exec(raw)?.[1]
          const field = /subscription[^{]*\{\s*(\w+)/.exec(msg.payload?.query ?? '')?.[1] ?? ''
          subscribes.push({ ws, opId: msg.id!, field, rawId, raw, active: true })
          return
        }
        case 'complete':
          for (const s of subscribes) if (s.ws === ws && s.opId === msg.id) s.active = false
          return
      }
    })
    ws.on('close', () => {
      for (const s of subscribes) if (s.ws === ws) s.active = false
    })
  })
  server.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    inits,
    subscribes,
    emit(rawId, note) {
      for (const s of subscribes) {
        if (!s.active || (s.rawId !== undefined && s.rawId !== rawId)) continue
        // The id goes back as a string (GraphQL ID): nothing rounds it on the way to the client.
        s.ws.send(`{"id":${JSON.stringify(s.opId)},"type":"next","payload":{"data":{${JSON.stringify(s.field)}:{"id":"${rawId}","note":${JSON.stringify(note)}}}}}`)
      }
    },
    async close() {
      for (const c of wss.clients) c.terminate()
      wss.close()
      await new Promise((r) => server.close(r))
    },
  }
}

type EntityPayload = NextPayload & { data?: { entity?: { id: string; note: string } } }
const entityIds = (payloads: EntityPayload[]): string[] => payloads.filter((p) => p.data?.entity !== undefined).map((p) => p.data!.entity!.id)

describe('subscription hub: integers beyond 2^53 in variables keep their digits', () => {
  let up: RawUpstream
  let proxy: TestProxy
  let url: string
  const clients: GqlClient[] = []
  const raws: RawClient[] = []

  const client = (params?: Record<string, unknown>): GqlClient => {
    const c = new GqlClient(url, params)
    clients.push(c)
    return c
  }
  const subscribesFor = (rawId: string) => up.subscribes.filter((s) => s.rawId === rawId)
  const activeSubscriptions = async () => metricSum(await proxy.metricsText(), 'igw_subscriptions_active')
  /** The count once the previous test's stopped subscriptions are gone (their completes are async). */
  const settledActive = async () => {
    let last = await activeSubscriptions()
    for (let i = 0; i < 25; i++) {
      await new Promise((r) => setTimeout(r, 200))
      const now = await activeSubscriptions()
      if (now === last) return now
      last = now
    }
    return last
  }

  beforeAll(async () => {
    up = await startRawUpstream()
    proxy = await startTestProxy({
      subscriptions: {
        upstream: { lingerMs: 5_000 },
        topics: {
          entity: { query: ENTITY, clientVariables: ['id'] },
          entities: { query: 'subscription { entities { id note } }' },
        },
      },
      routes: [{ name: 'gql', upstream: up.url, websocket: { mode: 'terminate' } }],
    } as never)
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.dispose()))
    for (const r of raws) r.end()
    await proxy?.close()
    await up?.close()
  })

  it('…993 and …992: two upstream subscriptions with the exact ids, each client gets only its own entity', async () => {
    const before = await settledActive()
    const c = client()
    const a = c.subscribe(ENTITY, { variables: { id: rawJSON(BIG_A) as never } })
    const b = c.subscribe(ENTITY, { variables: { id: rawJSON(BIG_B) as never } })
    await waitUntil(async () => (await activeSubscriptions()) === before + 2, 5_000, 'both clients admitted')
    await waitUntil(() => up.subscribes.length > 0, 5_000, 'an upstream subscribe')
    await new Promise((r) => setTimeout(r, 100))
    // Not one shared subscription to JSON.parse's …992.
    expect(up.subscribes.map((s) => s.rawId).sort()).toEqual([BIG_B, BIG_A])
    expect(metricSum(await proxy.metricsText(), 'igw_subscription_upstreams')).toBe(2)
    up.emit(BIG_A, 'a1')
    up.emit(BIG_B, 'b1')
    up.emit(BIG_A, 'a2')
    await a.received.wait((r) => entityIds(r.payloads).length === 2)
    await b.received.wait((r) => entityIds(r.payloads).length === 1)
    await new Promise((r) => setTimeout(r, 100))
    expect(entityIds(a.received.payloads)).toEqual([BIG_A, BIG_A])
    expect(entityIds(b.received.payloads)).toEqual([BIG_B])
    // Two streams: their cursors name two stream ids.
    const ca = a.received.payloads[0]!.extensions!.cursor!
    const cb = b.received.payloads[0]!.extensions!.cursor!
    expect(Buffer.from(ca, 'base64url').subarray(1, 13)).not.toEqual(Buffer.from(cb, 'base64url').subarray(1, 13))
    a.stop()
    b.stop()
  })

  it('a lone subscriber to a big id is subscribed upstream to that id (not the rounded one)', async () => {
    const seen = up.subscribes.length
    const solo = client().subscribe(ENTITY, { variables: { id: rawJSON('12345678901234567891') as never } })
    await waitUntil(() => up.subscribes.length > seen, 5_000, 'the upstream subscribe')
    // JSON.parse reads it as 12345678901234567000
    expect(up.subscribes.slice(seen).map((s) => s.rawId)).toEqual(['12345678901234567891'])
    up.emit('12345678901234567891', 'x')
    await solo.received.wait((r) => entityIds(r.payloads).length === 1)
    solo.stop()
  })

  it('two clients with the same big id share one upstream subscription (exact digits upstream)', async () => {
    const before = await settledActive()
    const seen = up.subscribes.length
    const x = client().subscribe(ENTITY, { variables: { id: rawJSON(BIG_SHARED) as never } })
    const y = client().subscribe(ENTITY, { variables: { id: rawJSON(BIG_SHARED) as never } })
    await waitUntil(async () => (await activeSubscriptions()) === before + 2, 5_000, 'both clients admitted')
    await waitUntil(() => up.subscribes.length > seen, 5_000, 'the upstream subscribe')
    await new Promise((r) => setTimeout(r, 100))
    // One upstream subscription, for the exact id (not JSON.parse's …996).
    expect(up.subscribes.slice(seen).map((s) => s.rawId)).toEqual([BIG_SHARED])
    up.emit(BIG_SHARED, 's1')
    await x.received.wait((r) => entityIds(r.payloads).length === 1)
    await y.received.wait((r) => entityIds(r.payloads).length === 1)
    expect(entityIds(x.received.payloads)).toEqual([BIG_SHARED])
    expect(entityIds(y.received.payloads)).toEqual([BIG_SHARED])
    expect(x.received.payloads[0]!.extensions!.cursor).toBe(y.received.payloads[0]!.extensions!.cursor)
    x.stop()
    y.stop()
  })

  it('safe ids still dedup: two clients with id 7 → one upstream subscription', async () => {
    const before = await settledActive()
    const p = client().subscribe(ENTITY, { variables: { id: 7 } })
    const q = client().subscribe(ENTITY, { variables: { id: 7 } })
    await waitUntil(async () => (await activeSubscriptions()) === before + 2, 5_000, 'both clients admitted')
    await waitUntil(() => subscribesFor('7').length === 1, 5_000, 'the upstream subscribe')
    await new Promise((r) => setTimeout(r, 100))
    expect(subscribesFor('7')).toHaveLength(1)
    up.emit('7', 'seven')
    await p.received.wait((r) => entityIds(r.payloads).length === 1)
    await q.received.wait((r) => entityIds(r.payloads).length === 1)
    p.stop()
    q.stop()
  })

  it('replay cursors: a big-id stream resumes from its own cursor, and never honours the rounded neighbour\'s', async () => {
    const neighbour = '18446744073709551556'
    const first = client().subscribe(ENTITY, { variables: { id: rawJSON(BIG_CURSOR) as never } })
    const other = client().subscribe(ENTITY, { variables: { id: rawJSON(neighbour) as never } })
    await waitUntil(() => subscribesFor(BIG_CURSOR).length === 1 && subscribesFor(neighbour).length === 1, 5_000, 'two upstream subscribes')
    up.emit(BIG_CURSOR, 'c1')
    up.emit(neighbour, 'n1')
    await first.received.wait((r) => entityIds(r.payloads).length === 1)
    await other.received.wait((r) => entityIds(r.payloads).length === 1)
    const cursor = first.received.lastCursor!
    first.stop()
    other.stop()
    // The stream lingers and keeps logging what its entity publishes.
    up.emit(BIG_CURSOR, 'c2')
    await new Promise((r) => setTimeout(r, 100))
    const resumed = client().subscribe(ENTITY, { variables: { id: rawJSON(BIG_CURSOR) as never }, cursor })
    await resumed.received.wait((r) => entityIds(r.payloads).length === 1)
    expect(resumed.received.gaps).toEqual([])
    expect((resumed.received.payloads[0] as EntityPayload).data!.entity).toEqual({ id: BIG_CURSOR, note: 'c2' })
    // The same cursor on the neighbour's stream: refused as another stream's, not replayed.
    const wrong = client().subscribe(ENTITY, { variables: { id: rawJSON(neighbour) as never }, cursor })
    await wrong.received.wait((r) => r.gaps.length === 1)
    expect(wrong.received.gaps[0]!.reason).toBe('invalid')
    expect(entityIds(wrong.received.payloads)).toEqual([])
    expect(subscribesFor(BIG_CURSOR)).toHaveLength(1)
    resumed.stop()
    wrong.stop()
  })

  it('extensions keep their digits upstream too', async () => {
    const c = client()
    const got: unknown[] = []
    c.client.subscribe({ query: ENTITY, variables: { id: 8 }, extensions: { tenantRef: rawJSON('9007199254740997') as never } }, { next: (v) => void got.push(v), error: () => undefined, complete: () => undefined })
    await waitUntil(() => up.subscribes.some((s) => s.rawId === '8'), 5_000, 'the upstream subscribe')
    expect(up.subscribes.find((s) => s.rawId === '8')!.raw).toContain('"extensions":{"tenantRef":9007199254740997}')
  })

  it('topic protocol: big ids in variables and in the per-client filter match exactly', async () => {
    const t = await RawClient.open(url, ['igw-topics'])
    raws.push(t)
    t.send({ op: 'subscribe', id: 'one', topic: 'entity', variables: { id: rawJSON('9007199254741003') } })
    t.send({ op: 'subscribe', id: 'two', topic: 'entity', variables: { id: rawJSON('9007199254741002') } })
    t.send({ op: 'subscribe', id: 'feed', topic: 'entities', filter: { id: rawJSON('9007199254741003') } })
    await waitUntil(() => subscribesFor('9007199254741003').length === 1 && subscribesFor('9007199254741002').length === 1 && up.subscribes.some((s) => s.field === 'entities'), 5_000, 'three upstream subscribes')
    await t.wait((c) => c.of((m) => m.op === 'subscribed').length === 3)
    up.emit('9007199254741002', 'two')
    up.emit('9007199254741003', 'one')
    await t.wait((c) => c.of((m) => m.op === 'event' && m.id === 'feed').length === 1)
    await t.wait((c) => c.of((m) => m.op === 'event' && m.id === 'one').length === 1)
    await t.wait((c) => c.of((m) => m.op === 'event' && m.id === 'two').length === 1)
    await new Promise((r) => setTimeout(r, 100))
    const ids = (id: string, field: string) => t.of((m) => m.op === 'event' && m.id === id).map((m) => ((m.payload as { data: Record<string, { id: string }> }).data[field]!.id))
    expect(ids('one', 'entity')).toEqual(['9007199254741003'])
    expect(ids('two', 'entity')).toEqual(['9007199254741002'])
    expect(ids('feed', 'entities')).toEqual(['9007199254741003'])
  })

  it('connection_init payloads with big numbers: two credential scopes, two upstream connections, exact digits', async () => {
    const a = client({ account: rawJSON(BIG_INIT_A) }).subscribe(ENTITY, { variables: { id: 'init' } })
    const b = client({ account: rawJSON(BIG_INIT_B) }).subscribe(ENTITY, { variables: { id: 'init' } })
    await waitUntil(() => up.inits.some((i) => i.includes(BIG_INIT_A)) && up.inits.some((i) => i.includes(BIG_INIT_B)), 5_000, 'two upstream connections')
    await waitUntil(() => up.subscribes.filter((s) => s.raw.includes('"id":"init"')).length === 2, 5_000, 'two upstream subscribes')
    expect(up.inits.filter((i) => i.includes(BIG_INIT_A))).toEqual([`{"type":"connection_init","payload":{"account":${BIG_INIT_A}}}`])
    a.stop()
    b.stop()
  })
})

describe('parsing and keys: the client digits, only when needed', () => {
  const subscribe = (variables: string, extensions = 'null') =>
    parseClientMessage(TRANSPORT_WS, `{"id":"1","type":"subscribe","payload":{"query":"subscription{a}","variables":${variables},"extensions":${extensions}}}`) as SubscribeCommand

  it('safe numbers: no second read (no `exact`); big or non-finite ones: read again with their digits', () => {
    expect(subscribe('{"id":9007199254740991,"f":1.5}').exact).toBeUndefined()
    const big = subscribe('{"id":9007199254740993,"n":{"x":[1e400]}}', '{"cursor":"C","ref":-9007199254740993}')
    expect(big.variables).toEqual({ id: 9007199254740992, n: { x: [Infinity] } }) // what the filters see
    expect(big.cursor).toBe('C')
    expect(JSON.stringify(big.exact)).toBe('{"variables":{"id":9007199254740993,"n":{"x":[1e400]}},"extensions":{"ref":-9007199254740993}}')
    const topic = parseClientMessage(TOPICS, '{"op":"subscribe","topic":"t","variables":{"id":7},"filter":{"id":9007199254740993}}') as SubscribeCommand
    expect(JSON.stringify(topic.filter)).toBe('{"id":9007199254740993}')
    const init = parseClientMessage(TRANSPORT_WS, '{"type":"connection_init","payload":{"account":9007199254740993}}')
    expect(JSON.stringify(init)).toBe('{"t":"init","payload":{"account":9007199254740993}}')
  })

  it('stream keys: …993 ≠ …992, and a digits-kept number ≠ an object {"rawJSON": …} a client sent', () => {
    const key = (variables: Record<string, unknown>) => streamKey({ route: 'r', upstreamUrl: 'ws://u', tenant: undefined, scope: 's', docHash: 'd', operationName: undefined, variables, extensions: undefined })
    expect(canonicalJson({ id: rawJSON(BIG_A) })).toBe(`{"id":${BIG_A}}`)
    expect(key({ id: rawJSON(BIG_A) }).key).not.toBe(key({ id: rawJSON(BIG_B) }).key)
    expect(key({ id: rawJSON(BIG_A) }).streamId).not.toBe(key({ id: rawJSON(BIG_B) }).streamId)
    expect(key({ id: rawJSON(BIG_A) }).key).not.toBe(key({ id: { rawJSON: BIG_A } }).key)
    expect(key({ id: rawJSON('7') }).key).toBe(key({ id: 7 }).key)
  })

  it('a topic filter on a big id matches that id only', () => {
    const m = compileEventFilter({ id: rawJSON(BIG_A) }, 'entity')!
    expect(m({ data: { entity: { id: BIG_A } } })).toBe(true)
    expect(m({ data: { entity: { id: BIG_B } } })).toBe(false)
  })
})
