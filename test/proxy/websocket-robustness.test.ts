// WebSocket upgrades and terminated sockets under hostile or broken clients: every case here once
// crashed a worker, wedged it at 100% CPU, or leaked an in-flight upgrade (found by a robustness
// sweep). Real proxy, real backends, raw sockets where a well-behaved client cannot misbehave.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const DEEP = 50_000 // JSON.stringify overflows a worker's stack past ~17k levels

interface RawReply {
  text: string
  why: 'closed' | 'timeout' | 'error'
}

/** One raw HTTP exchange: write `data`, collect the answer until the server closes (bounded). */
function raw(port: number, data: string, opts: { timeoutMs?: number; halfCloseAfterMs?: number } = {}): Promise<RawReply> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let text = ''
    let done = false
    const finish = (why: RawReply['why']) => {
      if (done) return
      done = true
      clearTimeout(t)
      s.destroy()
      resolve({ text, why })
    }
    const t = setTimeout(() => finish('timeout'), opts.timeoutMs ?? 3_000)
    s.setEncoding('latin1')
    s.on('data', (c: string) => (text += c))
    s.on('close', () => finish('closed'))
    s.on('error', () => finish('error'))
    s.on('connect', () => {
      s.write(data)
      if (opts.halfCloseAfterMs !== undefined) setTimeout(() => s.end(), opts.halfCloseAfterMs)
    })
  })
}

/** Write an upgrade request and reset the connection at once (RST, not FIN). */
function upgradeThenReset(port: number, data: string): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write(data)
      s.resetAndDestroy()
    })
    s.on('error', () => {})
    s.on('close', () => resolve())
  })
}

function upgradeRequest(opts: { host: string; path?: string; extra?: string; key?: string; version?: string; upgrade?: string }): string {
  return (
    `GET ${opts.path ?? '/graphql'} HTTP/1.1\r\nHost: ${opts.host}\r\nUpgrade: ${opts.upgrade ?? 'websocket'}\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${opts.key ?? KEY}\r\nSec-WebSocket-Version: ${opts.version ?? '13'}\r\n${opts.extra ?? ''}\r\n`
  )
}

function status(r: RawReply): number | undefined {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(r.text)
  return m ? Number(m[1]) : undefined
}

function body(r: RawReply): unknown {
  const i = r.text.indexOf('\r\n\r\n')
  return i === -1 ? undefined : JSON.parse(r.text.slice(i + 4))
}

async function restarts(p: TestProxy): Promise<number> {
  const res = await fetch(`${p.adminUrl}/metrics`, { signal: AbortSignal.timeout(3_000) })
  return metricSum(await res.text(), 'igw_worker_restarts_total')
}

async function expectHealthy(p: TestProxy): Promise<void> {
  await sleep(200) // a crash shows up in the supervisor's counter once the thread has exited
  expect(await restarts(p)).toBe(0)
  expect(p.logs.find('uncaught exception in worker')).toEqual([])
}

/** A raw WebSocket backend that counts the upgrades it accepted and the sockets still open. */
interface WsBackend {
  server: Server
  wss: WebSocketServer
  url: string
  accepted: number
  open: number
  /** Delay before the backend answers a handshake (ms). */
  handshakeDelayMs: number
  close(): void
}

async function startWsBackend(): Promise<WsBackend> {
  const server = createServer()
  const be: WsBackend = {
    server,
    wss: new WebSocketServer({
      server,
      handleProtocols: (protocols) => protocols.values().next().value ?? false,
      verifyClient: (_info, cb) => {
        if (be.handshakeDelayMs > 0) setTimeout(() => cb(true), be.handshakeDelayMs)
        else cb(true)
      },
    }),
    url: '',
    accepted: 0,
    open: 0,
    handshakeDelayMs: 0,
    close() {
      this.wss.close()
      this.server.closeAllConnections()
      this.server.close()
    },
  }
  be.wss.on('connection', (ws) => {
    be.accepted++
    be.open++
    ws.on('message', (d, isBinary) => ws.send(d, { binary: isBinary }))
    ws.on('close', () => be.open--)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  be.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return be
}

/** A terminated socket: its JSON messages and how it was closed. */
async function openTerminated(port: number, host: string, protocols: string[]): Promise<{ ws: WebSocket; messages: Record<string, unknown>[]; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/graphql`, protocols, { headers: { host }, handshakeTimeout: 3_000 })
  const messages: Record<string, unknown>[] = []
  ws.on('message', (d) => messages.push(JSON.parse(d.toString()) as Record<string, unknown>))
  ws.on('error', () => {})
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
  await once(ws, 'open')
  return { ws, messages, closed }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what}: nothing within ${ms} ms`)))])
}

describe('WebSocket robustness', () => {
  let be: WsBackend
  let demo: DemoBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startWsBackend()
    demo = await startDemoBackend()
    proxy = await startTestProxy({
      mode: 'ingress',
      subscriptions: { connectionInitTimeoutMs: 2_000, maxSubscriptionsPerConnection: 4 },
      routes: [
        { name: 'pass', match: { host: 'pass' }, upstream: be.url, type: 'http', filters: [] },
        { name: 'term', match: { host: 'term' }, upstream: demo.url, websocket: { mode: 'terminate' }, filters: [] },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    be?.close()
    await demo?.close()
  })

  it('a refused upgrade whose client resets the connection costs the worker nothing', async () => {
    const refused = [
      upgradeRequest({ host: 'nohost' }), // no route (worker-proxy)
      upgradeRequest({ host: 'pass', key: 'bad' }), // invalid handshake (passthrough)
      upgradeRequest({ host: 'pass', version: '8' }),
      upgradeRequest({ host: 'pass', upgrade: 'h2c' }),
      upgradeRequest({ host: 'term', key: 'bad' }), // invalid handshake (terminate)
      upgradeRequest({ host: 'term', upgrade: 'h2c' }),
      upgradeRequest({ host: 'term', extra: 'Sec-WebSocket-Protocol: foo\r\n' }), // no protocol the hub speaks
    ]
    for (const req of refused) await Promise.all(Array.from({ length: 20 }, () => upgradeThenReset(proxy.port, req)))
    await expectHealthy(proxy)
    // and the refusals themselves still answer
    const r = await raw(proxy.port, upgradeRequest({ host: 'pass', key: 'bad' }))
    expect(status(r)).toBe(400)
    expect(body(r)).toMatchObject({ errors: [{ extensions: { code: 'BAD_REQUEST' } }] })
  })

  it('passthrough: invalid subprotocol lists and fragments are answered 400 before anything opens upstream', async () => {
    const accepted = be.accepted
    for (const extra of ['Sec-WebSocket-Protocol: a b, (c)\r\n', 'Sec-WebSocket-Protocol: graphql-transport-ws,,\r\n', 'Sec-WebSocket-Protocol: ,,,\r\n', 'Sec-WebSocket-Protocol: x, x\r\n']) {
      const r = await raw(proxy.port, upgradeRequest({ host: 'pass', extra }))
      expect(r.why, extra).toBe('closed')
      expect(status(r), extra).toBe(400)
      expect(body(r), extra).toMatchObject({ errors: [{ message: expect.stringContaining('Sec-WebSocket-Protocol'), extensions: { code: 'BAD_REQUEST' } }] })
    }
    const frag = await raw(proxy.port, upgradeRequest({ host: 'pass', path: '/graphql?x=1#frag' }))
    expect(status(frag)).toBe(400)
    expect(body(frag)).toMatchObject({ errors: [{ extensions: { code: 'BAD_REQUEST' } }] })
    expect(be.accepted).toBe(accepted)
    // a valid list still works, and the backend's choice is what the client gets
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws', 'graphql-ws'], { headers: { host: 'pass' } })
    await once(ws, 'open')
    expect(ws.protocol).toBe('graphql-transport-ws')
    ws.close()
    await once(ws, 'close')
    await expectHealthy(proxy)
  })

  it('terminate: the same invalid subprotocol lists and fragments are answered 400', async () => {
    for (const extra of ['Sec-WebSocket-Protocol: graphql-transport-ws,,\r\n', 'Sec-WebSocket-Protocol: a b, (c)\r\n']) {
      const r = await raw(proxy.port, upgradeRequest({ host: 'term', extra }))
      expect(status(r), extra).toBe(400)
      expect(body(r), extra).toMatchObject({ errors: [{ extensions: { code: 'BAD_REQUEST' } }] })
    }
    const frag = await raw(proxy.port, upgradeRequest({ host: 'term', path: '/graphql#frag', extra: 'Sec-WebSocket-Protocol: graphql-transport-ws\r\n' }))
    expect(status(frag)).toBe(400)
    await expectHealthy(proxy)
  })

  it('terminate: a ping with a deeply nested payload closes that socket (4400), not the worker', async () => {
    const c = await openTerminated(proxy.port, 'term', ['graphql-transport-ws'])
    c.ws.send(`{"type":"ping","payload":${'['.repeat(DEEP)}${']'.repeat(DEEP)}}`)
    expect(await within(c.closed, 3_000, 'close')).toBe(4400)
    // 128 levels is still fine
    const ok = await openTerminated(proxy.port, 'term', ['graphql-transport-ws'])
    ok.ws.send(`{"type":"ping","payload":{"a":${'['.repeat(127)}${']'.repeat(127)}}}`)
    await waitUntil(() => ok.messages.some((m) => m.type === 'pong'), 3_000, 'pong')
    ok.ws.close()
    await expectHealthy(proxy)
  })

  it('terminate: a query with deeply nested variables is refused and the worker keeps answering', async () => {
    const c = await openTerminated(proxy.port, 'term', ['graphql-transport-ws'])
    c.ws.send('{"type":"connection_init"}')
    await waitUntil(() => c.messages.some((m) => m.type === 'connection_ack'), 3_000, 'ack')
    c.ws.send(`{"id":"1","type":"subscribe","payload":{"query":"{ hello }","variables":{"a":${'['.repeat(DEEP)}${']'.repeat(DEEP)}}}}`)
    expect(await within(c.closed, 3_000, 'close')).toBe(4400)
    // the worker is not spinning: it still answers HTTP and WebSocket traffic
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { host: 'term', 'content-type': 'application/json' }, body: '{"query":"{ hello }"}', headersTimeout: 3_000, bodyTimeout: 3_000 })
    expect(res.statusCode).toBe(200)
    expect(await res.body.json()).toEqual({ data: { hello: 'Hello, world!' } })
    await expectHealthy(proxy)

    // legacy protocol and topics: an error for that operation, the socket stays open
    const legacy = await openTerminated(proxy.port, 'term', ['graphql-ws'])
    legacy.ws.send('{"type":"connection_init"}')
    legacy.ws.send(`{"id":"L1","type":"start","payload":{"query":"{ hello }","variables":{"a":${'['.repeat(DEEP)}${']'.repeat(DEEP)}}}}`)
    await waitUntil(() => legacy.messages.some((m) => m.type === 'error' && m.id === 'L1'), 3_000, 'legacy error')
    legacy.ws.send('{"id":"L2","type":"start","payload":{"query":"{ hello }"}}')
    await waitUntil(() => legacy.messages.some((m) => m.type === 'data' && m.id === 'L2'), 3_000, 'legacy data')
    legacy.ws.close()
    const topics = await openTerminated(proxy.port, 'term', [])
    topics.ws.send(`{"op":"subscribe","id":"t1","topic":"x","filter":${'['.repeat(DEEP)}${']'.repeat(DEEP)}}`)
    await waitUntil(() => topics.messages.some((m) => m.op === 'error' && m.id === 't1'), 3_000, 'topic error')
    topics.ws.close()
    await expectHealthy(proxy)
  })

  it('terminate: an id completed while its subscribe is still being admitted can be used again at once', async () => {
    const c = await openTerminated(proxy.port, 'term', ['graphql-transport-ws'])
    const tcp = (c.ws as unknown as { _socket: Socket })._socket
    tcp.cork() // one burst: the hub reads all four before the first admission finishes
    c.ws.send('{"type":"connection_init"}')
    c.ws.send('{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 5, intervalMs: 10) }"}}')
    c.ws.send('{"id":"1","type":"complete"}')
    c.ws.send('{"id":"1","type":"subscribe","payload":{"query":"subscription { countdown(from: 2, intervalMs: 10) }"}}')
    tcp.uncork()
    await waitUntil(() => c.messages.some((m) => m.type === 'complete' && m.id === '1'), 3_000, 'complete')
    expect(c.messages.filter((m) => m.id === '1').map((m) => (m.type === 'next' ? (m.payload as { data: { countdown: number } }).data.countdown : m.type))).toEqual([2, 1, 'complete'])
    // Completed subscribes still being admitted keep counting toward the per-connection limit (4),
    // so completing and resubscribing in a burst cannot run more admissions than that at once.
    // (One TCP write, so the hub reads all of it before any admission can finish.)
    tcp.cork()
    for (const id of ['a', 'b', 'c', 'd']) {
      c.ws.send(`{"id":"${id}","type":"subscribe","payload":{"query":"{ hello }"}}`)
      c.ws.send(`{"id":"${id}","type":"complete"}`)
    }
    c.ws.send('{"id":"e","type":"subscribe","payload":{"query":"{ hello }"}}')
    tcp.uncork()
    await waitUntil(() => c.messages.some((m) => m.id === 'e'), 3_000, 'answer for e')
    expect(c.messages.filter((m) => m.id === 'e')).toMatchObject([{ type: 'error', payload: [{ extensions: { code: 'QUOTA_EXCEEDED' } }] }])
    expect(c.messages.filter((m) => ['a', 'b', 'c', 'd'].includes(m.id as string))).toEqual([])
    // once those admissions are over, the connection has its whole budget back
    c.ws.send('{"id":"f","type":"subscribe","payload":{"query":"{ hello }"}}')
    await waitUntil(() => c.messages.some((m) => m.id === 'f' && m.type === 'complete'), 3_000, 'f completes')
    c.ws.close()
    await expectHealthy(proxy)
  })
})

describe('WebSocket passthrough: upgrades that never complete are released', () => {
  let be: WsBackend
  let proxy: TestProxy

  beforeAll(async () => {
    be = await startWsBackend()
    proxy = await startTestProxy({ shutdown: { drainTimeoutMs: 5_000 }, routes: [{ name: 'pass', upstream: be.url, type: 'http', filters: [] }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    be?.close()
  })

  it('a client that half-closes while the upstream handshake runs: the upstream socket is closed and the upgrade finishes', async () => {
    be.handshakeDelayMs = 300
    const replies = await Promise.all(Array.from({ length: 5 }, () => raw(proxy.port, upgradeRequest({ host: 'x', extra: 'Sec-WebSocket-Protocol: graphql-transport-ws\r\n' }), { halfCloseAfterMs: 50 })))
    for (const r of replies) expect(r.why).toBe('closed')
    // The half-close is seen at once (499): the upstream handshake is dropped, before or after the
    // backend accepted it; either way no upstream socket stays open.
    await waitUntil(() => be.open === 0, 3_000, 'upstream sockets closed')
    expect(be.accepted).toBeLessThanOrEqual(5)
    be.handshakeDelayMs = 0
  })

  it('a subprotocol list ws would refuse never opens the upstream; shutdown does not wait for it', async () => {
    const accepted = be.accepted
    for (let i = 0; i < 5; i++) {
      const r = await raw(proxy.port, upgradeRequest({ host: 'x', extra: 'Sec-WebSocket-Protocol: graphql-transport-ws,,\r\n' }))
      expect(status(r)).toBe(400)
    }
    expect(be.accepted).toBe(accepted)
    expect(be.open).toBe(0)
    await expectHealthy(proxy)
    const t0 = Date.now()
    await proxy.close()
    expect(Date.now() - t0).toBeLessThan(3_000)
    expect(proxy.logs.find('drain deadline reached; closing remaining connections')).toEqual([])
  })
})
