// Outage units travel to Redis with the tenant's next decision. When that call's reply was lost
// (the connection dropped after Redis ran the script), the proxy took the call as failed, gave the
// units back to the table and sent them again: charged twice, the tenant refused early for the
// rest of the day. The call's units now carry a push token, and a failed call hands them to the
// reconciliation under it: Redis applies them once.
import { connect, createServer, type Server, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { quotaKeys } from '../../../config/quota-usage.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../../helpers/redis.ts'
import { sleep } from '../../helpers/wait.ts'

/**
 * A relay to Redis that refuses connections while `down`, and once armed cuts the connection
 * when the next array reply (a decision call's) comes back: Redis ran it, the proxy never hears.
 */
interface Relay {
  port: number
  down: boolean
  armed: boolean
  cutAll(): void
  close(): Promise<void>
}

async function startRelay(target: number): Promise<Relay> {
  const sockets = new Set<Socket>()
  const state: Relay = { port: 0, down: false, armed: false, cutAll: () => undefined, close: async () => undefined }
  const server: Server = createServer((client) => {
    if (state.down) {
      client.destroy()
      return
    }
    const upstream = connect(target, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (d: Buffer) => void upstream.write(d))
    upstream.on('data', (d: Buffer) => {
      if (state.armed && d[0] === 0x2a /* '*' */) {
        state.armed = false
        client.destroy()
        upstream.destroy()
        return
      }
      client.write(d)
    })
    for (const s of [client, upstream]) {
      s.on('error', () => undefined)
      s.on('close', () => {
        sockets.delete(s)
        client.destroy()
        upstream.destroy()
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  state.port = (server.address() as { port: number }).port
  state.cutAll = () => {
    for (const s of sockets) s.destroy()
  }
  state.close = async () => {
    state.cutAll()
    await new Promise((resolve) => server.close(resolve))
  }
  return state
}

let redis: TestRedis
let relay: Relay
let backend: DemoBackend
beforeAll(async () => {
  redis = await startRedis()
  relay = await startRelay(redis.port)
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
  await relay?.close()
  await redis?.close()
})

describe('outage units carried by a decision whose reply was lost (sweep 24a)', () => {
  it('are charged once', async () => {
    const PREFIX = `sw24a-${Date.now()}:` // a retry starts from clean keys
    relay.down = false
    relay.armed = false
    const p = await startTestProxy({
      redis: { url: `redis://127.0.0.1:${relay.port}`, keyPrefix: PREFIX },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
      tenants: { acme: {} },
      quotas: {
        defaults: { graphql: { limitPerDay: 1000 } },
        // No heartbeat during the test: the outage units reach Redis with a decision.
        redis: { budgetMs: 1000, breakerFailures: 1, breakerOpenMs: 50, heartbeatMs: 600_000, onOutage: 'fail-open' },
      },
    } as never)
    const admin = new Redis(redis.url)
    const used = async () => Number((await admin.hget(quotaKeys.kind(PREFIX, 'acme', 'graphql'), 'u')) ?? 0)
    let sent = 0
    const send = async () => {
      const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ hello }' }) })
      await r.body.dump()
      expect(r.statusCode).toBe(200)
      sent++
    }
    try {
      await send()
      expect(await used()).toBe(1)
      relay.down = true
      relay.cutAll()
      for (let i = 0; i < 4; i++) await send() // admitted locally: owed to Redis
      relay.armed = true
      relay.down = false
      // The first call that reaches Redis carries the owed units; its reply is cut.
      for (let i = 0; relay.armed && i < 100; i++) {
        await send()
        if (relay.armed) await sleep(20)
      }
      expect(relay.armed).toBe(false)
      // The cut request's local count (and that of any request whose call went out on the cut
      // connection) is owed to the reconciliation, which the breaker's recovery (after its pause) runs.
      const reported = () => p.logs.find('usage admitted during the Redis outage reported to Redis').length > 0
      for (let i = 0; !reported() && i < 100; i++) {
        await send()
        await sleep(20)
      }
      // The cut call's units are pushed again under its token, and the cut request's local count
      // only if the call never ran (its connection's marker): Redis applies neither. Every request once.
      expect(reported()).toBe(true)
      expect(await used()).toBe(sent)
    } finally {
      admin.disconnect()
      await p.close()
    }
  })
})
