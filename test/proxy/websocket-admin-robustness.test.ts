// WebSocket passthrough and the admin port under hostile clients (a robustness sweep): each case
// here is a defect that was found and fixed. Real proxy, real backends, real clients.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { type AddressInfo, type Socket } from 'node:net'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

const socketOf = (ws: WebSocket): Socket => (ws as unknown as { _socket: Socket })._socket

describe('WebSocket passthrough: control frames obey the buffer bound', () => {
  let server: Server
  let wss: WebSocketServer
  let proxy: TestProxy
  let url = ''

  beforeAll(async () => {
    server = createServer()
    // A backend that never reads (its socket is paused) and never answers pings.
    wss = new WebSocketServer({ server, autoPong: false })
    wss.on('connection', (ws) => {
      socketOf(ws).pause()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    proxy = await startTestProxy({ shutdown: { drainTimeoutMs: 500 }, routes: [{ name: 'ws', upstream: url, type: 'http', filters: [], websocket: { maxBufferedBytes: 256 * 1024 } }] })
  })
  afterAll(async () => {
    await proxy?.close()
    for (const c of wss?.clients ?? []) c.terminate()
    wss?.close()
    server?.closeAllConnections()
    server?.close()
  })

  it('a ping flood toward a backend that does not read stops being read, it is not buffered in the proxy', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/`)
    ws.on('error', () => undefined)
    await once(ws, 'open')
    const payload = Buffer.alloc(125, 1)
    const frames = 400_000 // ~52 MiB of ping frames
    for (let i = 0; i < frames; i++) ws.ping(payload)
    // Kernel buffers on both hops hold a few MiB; everything beyond must stay with the client.
    await sleep(1_500)
    expect(ws.bufferedAmount).toBeGreaterThan(24 * 1024 * 1024)
    ws.terminate()
  })
})

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

describe('an upstream URL with a password and no user name ("http://:pw@host")', () => {
  it('is refused like one with a user name, and the refusal does not print the password', async () => {
    // Before: only a user name was refused, so the password went on into /config keys, /readyz,
    // the igw_upstream_healthy label and the 502 a WebSocket client got (an inline upstream is
    // named by its URL).
    const PW = 'pw-s3cr3t'
    for (const upstream of [`http://:${PW}@127.0.0.1:9`, `http://user:${PW}@127.0.0.1:9`]) {
      let message = ''
      try {
        validateConfig({ listen: '127.0.0.1:0', routes: [{ name: 'g', upstream, type: 'http' }] })
      } catch (err) {
        message = (err as Error).message
      }
      expect(message).toMatch(/routes\[0\]\.upstream: expected an origin URL \(scheme:\/\/host:port\) without path, query or credentials/)
      expect(message).not.toContain(PW)
    }
    let upstreamsMessage = ''
    try {
      validateConfig({ listen: '127.0.0.1:0', upstreams: { u: { url: `http://:${PW}@127.0.0.1:9` } }, routes: [{ name: 'g', upstream: 'u', type: 'http' }] })
    } catch (err) {
      upstreamsMessage = (err as Error).message
    }
    expect(upstreamsMessage).toMatch(/upstreams\.u\.url: expected an origin URL/)
    expect(upstreamsMessage).not.toContain(PW)
  })
})

describe('admin port methods', () => {
  let proxy: TestProxy

  beforeAll(async () => {
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: `http://127.0.0.1:${await closedPort()}`, type: 'http', filters: [] }] })
  })
  afterAll(async () => {
    await proxy?.close()
  })

  it('answers anything but GET and HEAD with 405 and Allow, instead of as a GET (a POSTed config got 200)', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const) {
      for (const path of ['/config', '/metrics', '/healthz', '/nope']) {
        const res = await request(`${proxy.adminUrl}${path}`, { method, body: method === 'POST' || method === 'PUT' ? '{"routes":[]}' : undefined })
        const body = (await res.body.json()) as { error: string }
        expect({ method, path, status: res.statusCode, allow: res.headers.allow }).toEqual({ method, path, status: 405, allow: 'GET, HEAD' })
        expect(body.error).toContain(method)
      }
    }
    const head = await request(`${proxy.adminUrl}/healthz`, { method: 'HEAD' })
    await head.body.dump()
    expect(head.statusCode).toBe(200)
    const get = await request(`${proxy.adminUrl}/config?x=1`)
    expect(get.statusCode).toBe(200)
    await get.body.dump()
  })
})
