// A decision call whose connection dropped before its reply came back: Redis may have run it (and
// counted the request) or not. The outage policy admitted the request and counted it too, and its
// count was pushed to Redis later: a call that had run counted twice. Each connection's calls now
// leave a marker in Redis, and the count of a lost call's requests is charged only if it never ran.
import { createHash } from 'node:crypto'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { quotaKeys } from '../../../config/quota-usage.ts'
import { DECIDE_LUA } from '../../../filters/quota/redis-script.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep } from '../../helpers/wait.ts'

const DECIDE_SHA = createHash('sha1').update(DECIDE_LUA).digest('hex')

/**
 * What the relay does to the next decision call (then it passes everything again):
 * 'reply': forwards it, cuts the connection when its reply comes back (Redis ran it);
 * 'request': cuts the connection instead of forwarding it (Redis never sees it);
 * 'swallow': forwards it and drops every reply until the test cuts the connection;
 * 'hold': keeps it and cuts the proxy's side only; release() sends it to Redis on the old
 * connection later (bytes of a dropped connection still on their way).
 */
type Mode = 'pass' | 'reply' | 'request' | 'swallow' | 'hold'

interface Relay {
  port: number
  mode: Mode
  cutAll(): void
  /** Send the held call to Redis, wait for its answer, close that connection. */
  release(): Promise<string>
  close(): Promise<void>
}

async function startRelay(target: number): Promise<Relay> {
  const sockets = new Set<Socket>()
  let held: { upstream: Socket; data: Buffer } | undefined
  const state: Relay = {
    port: 0,
    mode: 'pass',
    cutAll: () => {
      for (const s of sockets) s.destroy()
    },
    release: async () => {
      const h = held!
      held = undefined
      const answer = new Promise<string>((resolve) => h.upstream.once('data', (d: Buffer) => resolve(d.toString('latin1'))))
      h.upstream.write(h.data)
      const said = await answer
      h.upstream.destroy()
      return said
    },
    close: async () => {
      state.cutAll()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  const server: Server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1')
    sockets.add(client).add(upstream)
    let callSent = false
    let swallowing = false
    client.on('data', (d: Buffer) => {
      if (state.mode !== 'pass' && d.includes(DECIDE_SHA)) {
        const mode = state.mode
        state.mode = 'pass'
        if (mode === 'request') return void client.destroy()
        if (mode === 'hold') {
          held = { upstream, data: d }
          sockets.delete(upstream)
          return void client.destroy()
        }
        callSent = mode === 'reply'
        swallowing = mode === 'swallow'
      }
      upstream.write(d)
    })
    upstream.on('data', (d: Buffer) => {
      if (swallowing) return
      if (callSent && d[0] === 0x2a /* '*': the call's reply */) return void client.destroy()
      client.write(d)
    })
    for (const s of [client, upstream]) s.on('error', () => undefined)
    client.on('close', () => {
      sockets.delete(client)
      if (held?.upstream !== upstream) upstream.destroy()
    })
    upstream.on('close', () => {
      sockets.delete(upstream)
      client.destroy()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as { port: number }).port
  return state
}

const PREFIX = `sw30m-${process.pid}-${Date.now()}:`
const REPORTED = 'usage admitted during the Redis outage reported to Redis'
let redis: TestRedis
let relay: Relay
let backend: DemoBackend
let p: TestProxy
let admin: Redis

beforeAll(async () => {
  redis = await startRedis()
  relay = await startRelay(redis.port)
  backend = await startDemoBackend()
  p = await startTestProxy({
    redis: { url: `redis://127.0.0.1:${relay.port}`, keyPrefix: PREFIX },
    routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    tenants: { one: {}, two: {}, three: {}, four: {} },
    quotas: {
      defaults: { graphql: { limitPerDay: 1000 } },
      // No heartbeat during the test: the breaker's recovery runs the reconciliation.
      redis: { budgetMs: 300, breakerFailures: 1, breakerAfterMs: 0, breakerOpenMs: 50, heartbeatMs: 600_000, onOutage: 'fail-open' },
    },
  } as never)
  admin = new Redis(redis.url)
})
afterAll(async () => {
  admin?.disconnect()
  await p?.close()
  await backend?.close()
  await relay?.close()
  await redis?.close()
})

const sent: Record<string, number> = {}
async function send(tenant: string): Promise<void> {
  const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query: '{ hello }' }) })
  await r.body.dump()
  expect(r.statusCode).toBe(200)
  sent[tenant] = (sent[tenant] ?? 0) + 1
}
const used = async (tenant: string) => Number((await admin.hget(quotaKeys.kind(PREFIX, tenant, 'graphql'), 'u')) ?? 0)

/**
 * Requests (the first ones after the breaker's pause) until `settled`, which every request the
 * proxy answered lets through once what it owes Redis has been reported.
 */
async function until(tenant: string, settled: () => Promise<boolean>): Promise<void> {
  for (let i = 0; !(await settled()) && i < 100; i++) {
    await send(tenant)
    await sleep(20)
  }
}

/** The breaker's recovery reported the outage's usage once more, or Redis counts a request twice. */
function reportedOrOver(tenant: string): () => Promise<boolean> {
  const before = p.logs.find(REPORTED).length
  return async () => p.logs.find(REPORTED).length > before || (await used(tenant)) > sent[tenant]!
}

describe('a decision call whose reply was lost (sweep 30m)', () => {
  it('counts the request once when Redis ran the call', async () => {
    await send('one')
    relay.mode = 'reply'
    await send('one') // Redis counts it, the reply is cut, the outage policy admits it
    expect(relay.mode).toBe('pass')
    await until('one', reportedOrOver('one'))
    expect(await used('one')).toBe(sent.one)
  })

  it('counts the request once when the call never reached Redis', async () => {
    await send('two')
    relay.mode = 'request'
    await send('two')
    expect(relay.mode).toBe('pass')
    // Redis counts it only once the reconciliation pushed the outage policy's count
    await until('two', async () => (await used('two')) >= sent.two!)
    expect(await used('two')).toBe(sent.two)
  })

  it('counts the request once when the call outlived its budget and then its connection', async () => {
    await send('three')
    relay.mode = 'swallow'
    await send('three') // Redis runs it; no reply: the budget runs out, the outage policy admits it
    relay.cutAll()
    await until('three', reportedOrOver('three'))
    expect(await used('three')).toBe(sent.three)
  })

  it('refuses a lost call that reaches Redis after the proxy accounted for it', async () => {
    await send('four')
    relay.mode = 'hold'
    await send('four') // the proxy's connection drops with the call still on its way
    await until('four', reportedOrOver('four')) // the request's count is charged: the call never ran
    expect(await used('four')).toBe(sent.four)
    expect(await relay.release()).toMatch(/^-IGWSTALE/)
    expect(await used('four')).toBe(sent.four)
  })
})
