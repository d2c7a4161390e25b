// subscriptions.keepAliveMs drove one hub-wide timer that took the current value at the next
// upgrade: a reload reached every connection already open at some other client's upgrade (and
// never without one) — a reload to 0 stopped the pings of connections accepted with 100 ms, one
// back to 100 ms started pinging a connection accepted with 0. A reload does not touch live
// connections (docs/subscriptions.md): each keeps the keep-alive it was accepted with.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { RawClient } from './clients.ts'

describe('subscriptions.keepAliveMs across reloads', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  const doc = (keepAliveMs: number) => ({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, subscriptions: { keepAliveMs }, routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }] })
  const clients: RawClient[] = []

  /** A graphql-transport-ws client counting the WebSocket pings it gets (ws answers each). */
  const open = async (): Promise<{ c: RawClient; pings: () => number }> => {
    const c = await RawClient.open(`ws://127.0.0.1:${proxy.port}/graphql`, ['graphql-transport-ws'])
    clients.push(c)
    let n = 0
    c.ws.on('ping', () => n++)
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'))
    return { c, pings: () => n }
  }

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    // 300 ms: a client must answer each ping within one interval; 100 ms lost a client of a busy machine.
    proxy = await startTestProxy(doc(300))
  })
  afterAll(async () => {
    for (const c of clients) c.end()
    await proxy?.close()
    await be?.close()
  })

  it('each connection keeps the keep-alive it was accepted with', async () => {
    const a = await open()
    await expect.poll(a.pings, { timeout: 6_000 }).toBeGreaterThanOrEqual(1)

    expect((await proxy.applyConfig(validateConfig(doc(0)))).ok).toBe(true)
    const b = await open()
    // a is still pinged (and answers: it stays open); b, accepted with 0, is not
    const from = a.pings()
    await expect.poll(a.pings, { timeout: 6_000 }).toBeGreaterThanOrEqual(from + 3)
    expect(b.pings()).toBe(0)

    expect((await proxy.applyConfig(validateConfig(doc(300)))).ok).toBe(true)
    const c = await open()
    await expect.poll(c.pings, { timeout: 6_000 }).toBeGreaterThanOrEqual(3)
    expect(b.pings()).toBe(0)
    expect(a.c.close).toBeUndefined()
    expect(b.c.close).toBeUndefined()
  })
})
