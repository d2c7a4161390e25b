// A peer that accepts the TCP connection and never answers (a TCP proxy or load balancer in front
// of a Redis that is gone): ioredis's connectTimeout covers the TCP connect only, so the shared
// connection sat in "connect" (its ready check unanswered) for good and never retried. It must
// give up on that connection and reconnect, reaching the healthy path behind the same address.
import { createServer, connect, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { SharedRedis } from '../../proxy/redis.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('shared Redis connection whose ready check goes unanswered', () => {
  let redis: TestRedis
  let front: Server
  let provider: SharedRedis
  const sockets: Socket[] = []
  let accepted = 0
  const lines: { msg?: string; silentMs?: number }[] = []

  beforeAll(async () => {
    redis = await startRedis()
    // The first connection is swallowed (accepted, never relayed); later ones reach Redis.
    front = createServer((client) => {
      sockets.push(client)
      client.on('error', () => {})
      if (accepted++ === 0) return
      const up = connect(redis.port, '127.0.0.1')
      sockets.push(up)
      up.on('error', () => client.destroy())
      client.pipe(up).pipe(client)
    })
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve))
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { msg?: string })
        cb()
      },
    })
    const registry = new Registry()
    provider = new SharedRedis(`redis://127.0.0.1:${(front.address() as AddressInfo).port}`, 'hs:', pino({ level: 'info' }, sink), {
      up: new Gauge({ name: 'up', help: 'h', registers: [registry] }),
      reconnects: new Counter({ name: 'rc', help: 'h', registers: [registry] }),
    })
  })
  afterAll(async () => {
    await provider?.close()
    for (const s of sockets) s.destroy()
    await new Promise<void>((resolve) => (front ? front.close(() => resolve()) : resolve()))
    await redis?.close()
  })

  it('drops the silent connection after the heartbeat window and becomes ready on a new one', async () => {
    const client = provider.client()
    const t0 = Date.now()
    await waitUntil(() => provider.ready, 8_000, 'ready through a second connection')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_500) // not before the silent one was given up
    expect(accepted).toBeGreaterThanOrEqual(2)
    const note = lines.find((l) => l.msg === 'redis accepted the connection but did not answer its ready check; reconnecting')
    expect(note).toBeDefined()
    expect(note!.silentMs).toBeGreaterThanOrEqual(2_000)
    await client.set('hs:k', 'v')
    expect(await client.get('hs:k')).toBe('v')
  })
})
