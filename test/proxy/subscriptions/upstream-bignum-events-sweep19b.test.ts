// Events whose payload holds a number JSON.parse does not keep — an integer beyond 2^53 (a 64-bit
// id or counter sent as a JSON number) or a non-finite one (1e400, a BigDecimal backend) — reached
// terminated-subscription clients re-serialized from the rounded value: …993 became …992, 1e400
// became null (over HTTP and passthrough WebSockets the client gets the backend's bytes). A topic
// filter on such a field matched the wrong events, and a resumable backend with 64-bit numeric
// event ids was resubscribed with the rounded id (resumed from another event). The upstream here
// speaks graphql-transport-ws by hand over `ws`, writing the numbers as text.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket, WebSocketServer } from 'ws'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { RawClient } from './clients.ts'

const rawJSON = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON

interface Sub {
  ws: WebSocket
  opId: string
  raw: string
  active: boolean
}

interface RawUpstream {
  url: string
  subscribes: Sub[]
  /** Send `payloadText` (raw JSON) as a `next` to every active subscription whose query mentions `field`. */
  emit(field: string, payloadText: string): void
  /** Drop every connection (the server keeps listening: the hub reconnects). */
  drop(): void
  close(): Promise<void>
}

async function startRawUpstream(): Promise<RawUpstream> {
  const subscribes: Sub[] = []
  const server: Server = createServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ server, handleProtocols: (p) => (p.has('graphql-transport-ws') ? 'graphql-transport-ws' : false) })
  wss.on('connection', (ws) => {
    ws.on('message', (data) => {
      const raw = data.toString()
      const msg = JSON.parse(raw) as { type: string; id?: string }
      if (msg.type === 'connection_init') ws.send('{"type":"connection_ack"}')
      else if (msg.type === 'ping') ws.send('{"type":"pong"}')
      else if (msg.type === 'subscribe') subscribes.push({ ws, opId: msg.id!, raw, active: true })
      else if (msg.type === 'complete') for (const s of subscribes) if (s.ws === ws && s.opId === msg.id) s.active = false
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
    subscribes,
    emit(field, payloadText) {
      for (const s of subscribes) if (s.active && s.raw.includes(field)) s.ws.send(`{"id":${JSON.stringify(s.opId)},"type":"next","payload":${payloadText}}`)
    },
    drop() {
      for (const c of wss.clients) c.terminate()
    },
    async close() {
      for (const c of wss.clients) c.terminate()
      wss.close()
      await new Promise((r) => server.close(r))
    },
  }
}

/** A raw client that also keeps every message as the text it received. */
async function open(url: string, protocol: string): Promise<{ c: RawClient; texts: string[] }> {
  const c = await RawClient.open(url, [protocol])
  const texts: string[] = []
  c.ws.on('message', (d) => texts.push(d.toString()))
  return { c, texts }
}

describe('terminated subscriptions: numbers JSON.parse does not keep, from the upstream (sweep 19b)', () => {
  let up: RawUpstream
  let proxy: TestProxy
  let url: string
  const raws: RawClient[] = []

  beforeAll(async () => {
    up = await startRawUpstream()
    proxy = await startTestProxy({
      subscriptions: {
        upstream: { lingerMs: 0, resume: true, retryInitialMs: 50, retryMaxMs: 200 },
        topics: { counters: { query: 'subscription { counters { name total } }' } },
      },
      routes: [{ name: 'gql', upstream: up.url, websocket: { mode: 'terminate' } }],
    } as never)
    url = `ws://127.0.0.1:${proxy.port}/graphql`
  })
  afterAll(async () => {
    for (const r of raws) r.end()
    await proxy?.close()
    await up?.close()
  })

  it('graphql-transport-ws: the client gets the upstream\'s digits (a 64-bit integer, 1e400), with the cursor added', async () => {
    const { c, texts } = await open(url, 'graphql-transport-ws')
    raws.push(c)
    c.send({ type: 'connection_init' })
    c.send({ type: 'subscribe', id: 's1', payload: { query: 'subscription { ledger { id total huge } }' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    await expect.poll(() => up.subscribes.filter((s) => s.active && s.raw.includes('ledger')).length, { timeout: 10_000 }).toBe(1)
    up.emit('ledger', '{"data":{"ledger":{"id":"a","total":9007199254740993,"huge":1e400}}}')
    await expect.poll(() => texts.filter((t) => t.includes('"type":"next"')).length, { timeout: 10_000 }).toBe(1)
    const next = texts.find((t) => t.includes('"type":"next"'))!
    expect(next).toContain('"total":9007199254740993')
    expect(next).toContain('"huge":1e400')
    expect(next).toContain('"cursor":"')
    c.send({ type: 'complete', id: 's1' })
  })

  it('topic protocol: a filter on a 64-bit number matches the event with those digits, not its rounded neighbour', async () => {
    const { c, texts } = await open(url, 'igw-topics')
    raws.push(c)
    c.send({ op: 'subscribe', id: 'mine', topic: 'counters', filter: { total: rawJSON('9007199254740993') } })
    await c.wait((x) => x.of((m) => m.op === 'subscribed').length === 1)
    await expect.poll(() => up.subscribes.filter((s) => s.active && s.raw.includes('counters')).length, { timeout: 10_000 }).toBe(1)
    up.emit('counters', '{"data":{"counters":{"name":"neighbour","total":9007199254740992}}}')
    up.emit('counters', '{"data":{"counters":{"name":"mine","total":9007199254740993}}}')
    up.emit('counters', '{"data":{"counters":{"name":"after","total":1}}}')
    await expect.poll(() => texts.filter((t) => t.includes('"op":"event"')).length, { timeout: 10_000 }).toBeGreaterThanOrEqual(1)
    // Give a wrongly delivered neighbour time to arrive too.
    await new Promise((r) => setTimeout(r, 300))
    const events = texts.filter((t) => t.includes('"op":"event"'))
    expect(events).toHaveLength(1)
    expect(events[0]).toContain('"name":"mine"')
    expect(events[0]).toContain('"total":9007199254740993')
    c.send({ op: 'unsubscribe', id: 'mine' })
  })

  it('resume: a 64-bit numeric event id is resubscribed with its exact digits, and its echo keeps the epoch', async () => {
    const { c, texts } = await open(url, 'graphql-transport-ws')
    raws.push(c)
    c.send({ type: 'connection_init' })
    c.send({ type: 'subscribe', id: 'r1', payload: { query: 'subscription { journal { seq } }' } })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    await expect.poll(() => up.subscribes.filter((s) => s.active && s.raw.includes('journal')).length, { timeout: 10_000 }).toBe(1)
    up.emit('journal', '{"data":{"journal":{"seq":1}},"extensions":{"eventId":9007199254740993}}')
    await expect.poll(() => texts.filter((t) => t.includes('"type":"next"')).length, { timeout: 10_000 }).toBe(1)
    up.drop()
    await expect.poll(() => up.subscribes.filter((s) => s.raw.includes('journal')).length, { timeout: 10_000 }).toBe(2)
    const resub = up.subscribes.filter((s) => s.raw.includes('journal')).at(-1)!
    expect(resub.raw).toContain('"lastEventId":"9007199254740993"')
    // The backend resumed after that id (echoed as the number it is): same epoch, no gap.
    up.emit('journal', '{"data":{"journal":{"seq":2}},"extensions":{"eventId":9007199254740994,"resumedFrom":9007199254740993}}')
    await expect.poll(() => texts.filter((t) => t.includes('"type":"next"')).length, { timeout: 10_000 }).toBe(2)
    await new Promise((r) => setTimeout(r, 200))
    const nexts = texts.filter((t) => t.includes('"type":"next"'))
    expect(nexts.some((t) => t.includes('STREAM_GAP'))).toBe(false)
    expect(nexts[1]).toContain('"seq":2')
  })
})
