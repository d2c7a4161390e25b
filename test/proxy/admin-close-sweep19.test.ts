// The admin port at shutdown: a connection that holds a half-sent request must not keep
// `igw proxy` (real child process) from exiting on SIGTERM, nor startProxy's close() from
// resolving.
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { startRawBackend } from '../helpers/backends.ts'
import { spawnIgw, startTestProxy } from '../helpers/proxy.ts'

/** A connection to the admin port that sent the start of a request and then nothing more. */
async function halfSentRequest(port: number): Promise<Socket> {
  const s = connect(port, '127.0.0.1')
  s.on('error', () => undefined)
  await once(s, 'connect')
  s.write('GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n')
  return s
}

describe('admin port at shutdown (sweep 19)', () => {
  it('SIGTERM stops `igw proxy` (exit 0, "stopped" logged) while an admin connection has a request half sent', async () => {
    const backend = await startRawBackend((_req, res) => res.end('ok'))
    const igw = await spawnIgw(['proxy', '--upstream', backend.url, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'])
    let socket: Socket | undefined
    try {
      // The admin port works; then a client stalls half way through a request.
      const ok = await request(`${igw.adminUrl}/healthz`)
      await ok.body.dump()
      expect(ok.statusCode).toBe(200)
      socket = await halfSentRequest(igw.adminPort)
      // Let the server read those bytes before the signal.
      await new Promise((resolve) => setTimeout(resolve, 300))
      igw.child.kill('SIGTERM')
      // Drain (no request in flight) takes well under a second; 30 s is generous on any CI.
      const code = await Promise.race([igw.exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000).unref())])
      expect(code).toBe(0)
      expect(igw.output.some((l) => l.includes('"msg":"stopped"'))).toBe(true)
    } finally {
      socket?.destroy()
      await igw.stop('SIGKILL')
      await backend.close()
    }
  }, 120_000)

  it('close() of an embedded proxy resolves while an admin connection has a request half sent', async () => {
    const backend = await startRawBackend((_req, res) => res.end('ok'))
    const proxy = await startTestProxy({ shutdown: { drainTimeoutMs: 500 }, routes: [{ name: 'a', upstream: backend.url }] })
    const socket = await halfSentRequest(proxy.adminPort)
    try {
      await new Promise((resolve) => setTimeout(resolve, 300))
      const closed = await Promise.race([proxy.close().then(() => 'closed' as const), new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000).unref())])
      expect(closed).toBe('closed')
      // The stalled client's connection was cut, not left open.
      if (!socket.destroyed && socket.readyState !== 'closed') await once(socket, 'close')
    } finally {
      socket.destroy()
      await backend.close()
    }
  }, 120_000)
})
