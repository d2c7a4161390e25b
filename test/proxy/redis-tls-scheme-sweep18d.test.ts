// A `rediss:` URL means TLS whatever the case of its scheme (URL schemes are case-insensitive,
// and validation accepts `REDISS://`). ioredis checks for the lowercase prefix only, so an
// upper-case scheme connected in plaintext and sent `AUTH user password` in the clear.
// The "Redis" here is a real TCP listener that records the first bytes each client sends: a TLS
// client's first byte is 0x16 (a handshake record); a plaintext one sends RESP ("*…").
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { SharedRedis } from '../../proxy/redis.ts'
import { pino } from 'pino'

const PASSWORD = 's3cret-sweep18d'

async function firstBytesServer(): Promise<{ server: Server; port: number; first: Buffer[]; sockets: Set<Socket> }> {
  const first: Buffer[] = []
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => undefined)
    socket.once('data', (d) => first.push(d))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as { port: number }).port, first, sockets }
}

describe('rediss:// in any case connects with TLS (sweep18d)', () => {
  const cleanups: (() => Promise<unknown> | void)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  for (const scheme of ['rediss', 'REDISS', 'Rediss']) {
    it(`SharedRedis with ${scheme}:// starts a TLS handshake and never sends the password in the clear`, async () => {
      const srv = await firstBytesServer()
      cleanups.push(() => {
        for (const s of srv.sockets) s.destroy()
        return new Promise((r) => srv.server.close(r))
      })
      const redis = new SharedRedis(`${scheme}://igw:${PASSWORD}@127.0.0.1:${srv.port}/0`, 't:', pino({ level: 'silent' }), {
        up: { set: () => undefined } as never,
        reconnects: { inc: () => undefined } as never,
      })
      cleanups.push(() => redis.close())
      redis.client().on('error', () => undefined)
      await expect.poll(() => srv.first.length, { timeout: 10_000 }).toBeGreaterThan(0)
      const bytes = Buffer.concat(srv.first)
      expect(bytes.includes(PASSWORD)).toBe(false)
      expect(bytes[0]).toBe(0x16) // TLS handshake record, not RESP
    })
  }

  it('a proxy configured with REDISS:// (persisted APQ in Redis) does not send AUTH in plaintext', async () => {
    const srv = await firstBytesServer()
    cleanups.push(() => {
      for (const s of srv.sockets) s.destroy()
      return new Promise((r) => srv.server.close(r))
    })
    const backend: RawBackend = await startRawBackend((_req, res) => res.end('{"data":{}}'))
    cleanups.push(() => backend.close())
    const proxy: TestProxy = await startTestProxy({
      redis: { url: `REDISS://igw:${PASSWORD}@127.0.0.1:${srv.port}/2`, keyPrefix: 'tls:' },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'persisted' }] as never }],
    })
    cleanups.push(() => proxy.close())
    await expect.poll(() => srv.first.length, { timeout: 10_000 }).toBeGreaterThan(0)
    const bytes = Buffer.concat(srv.first)
    expect(bytes.includes(PASSWORD)).toBe(false)
    expect(bytes[0]).toBe(0x16)
    // and the password is in neither /config nor the logs
    const cfg = await (await fetch(`${proxy.adminUrl}/config`)).text()
    expect(cfg.includes(PASSWORD)).toBe(false)
    expect(proxy.logs.raw.some((l) => l.includes(PASSWORD))).toBe(false)
  })
})
