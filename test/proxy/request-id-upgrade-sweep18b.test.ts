// A WebSocket upgrade refused by a filter ahead of the route's request-id filter (the tenant
// filter's 401/403) went out with no request id, and its access line named it by whatever
// x-request-id the client sent, even with `trustIncoming: false`. It is now named by the
// request-id filter's rule, as an HTTP request refused the same way.
import { connect } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { startDemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

/** A raw upgrade request; resolves with the response head (status line and headers). */
function upgrade(port: number, extra: string): Promise<{ status: number; headers: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString('latin1')
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      const [line, ...rest] = buf.slice(0, end).split('\r\n')
      const headers: Record<string, string> = {}
      for (const h of rest) headers[h.slice(0, h.indexOf(':')).toLowerCase()] = h.slice(h.indexOf(':') + 1).trim()
      s.destroy()
      resolve({ status: Number(line!.split(' ')[1]), headers })
    })
    s.on('error', reject)
    s.write(`GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n${extra}\r\n`)
  })
}

async function accessLine(proxy: TestProxy, status: number): Promise<Record<string, unknown>> {
  await expect.poll(() => proxy.logs.lines.some((l) => l.msg === 'access' && l.status === status), { timeout: 10_000 }).toBe(true)
  return proxy.logs.lines.find((l) => l.msg === 'access' && l.status === status)!
}

describe('an upgrade refused before the request-id filter ran', () => {
  it('carries and logs the id that filter would assign, never the client-chosen one it does not trust', async () => {
    const backend = await startDemoBackend()
    cleanups.push(() => backend.close())
    const proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'gql', upstream: backend.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'request-id', header: 'x-correlation-id', trustIncoming: false }] as never }],
    })
    cleanups.push(() => proxy.close())
    const r = await upgrade(proxy.port, 'x-request-id: spoofed-by-client\r\nx-correlation-id: also-spoofed\r\n')
    expect(r.status).toBeGreaterThanOrEqual(400)
    expect(r.headers['x-correlation-id']).toMatch(UUID)
    const line = await accessLine(proxy, r.status)
    expect(line.reqId).toBe(r.headers['x-correlation-id'])
    expect(JSON.stringify(proxy.logs.lines)).not.toContain('spoofed')
  })
})
