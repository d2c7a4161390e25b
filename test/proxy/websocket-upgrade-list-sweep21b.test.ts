// `Upgrade: websocket, foo` — a list naming websocket first, which the listener routes as an
// upgrade — was refused "WebSocket upgrades are not enabled on this route", on a route that has
// them. It is refused (as Envoy refuses an Upgrade value that is not exactly a configured upgrade
// type, and as ws-based backends do), with a 400 that says what is wrong, in both modes; nothing
// opens upstream. `Upgrade: websocket` alone still upgrades, and a route without WebSockets says so.
import { once } from 'node:events'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

/** A raw request; resolves with the head and body of the answer, read until its end (or a 101's head). */
async function exchange(port: number, upgrade: string, path: string): Promise<{ head: string; body: string }> {
  const sock = connect(port, '127.0.0.1')
  sock.on('error', () => undefined)
  try {
    await once(sock, 'connect')
    let got = ''
    const done = new Promise<void>((resolve) => {
      sock.on('data', (c: Buffer) => {
        got += c.toString('latin1')
        if (got.startsWith('HTTP/1.1 101') && got.includes('\r\n\r\n')) resolve()
      })
      sock.on('close', () => resolve())
    })
    sock.write(`GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: ${upgrade}\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: graphql-transport-ws\r\n\r\n`)
    await done
    const end = got.indexOf('\r\n\r\n')
    return { head: got.slice(0, end), body: got.slice(end + 4) }
  } finally {
    sock.destroy()
  }
}

describe('an Upgrade list naming websocket first', () => {
  let wss: WebSocketServer
  let upgrades = 0
  let proxy: TestProxy

  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    wss.on('headers', () => upgrades++)
    wss.on('connection', (ws) => ws.on('error', () => undefined))
    await once(wss, 'listening')
    const upstream = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`
    proxy = await startTestProxy({
      routes: [
        { name: 'pass', match: { pathPrefix: '/pass' }, upstream, websocket: { enabled: true } },
        { name: 'term', match: { pathPrefix: '/term' }, upstream, websocket: { mode: 'terminate' } },
        { name: 'off', match: { pathPrefix: '/off' }, upstream, websocket: { enabled: false } },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    for (const c of wss?.clients ?? []) c.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  it.each(['/pass', '/term'])('%s: refused with a 400 naming the Upgrade header, nothing opened upstream', async (path) => {
    const before = upgrades
    const { head, body } = await exchange(proxy.port, 'websocket, foo', path)
    expect(head).toMatch(/^HTTP\/1\.1 400 /)
    expect(JSON.parse(body)).toEqual({
      errors: [{ message: 'invalid WebSocket handshake (the Upgrade header must be "websocket" alone, not a list of protocols)', extensions: { code: 'BAD_REQUEST' } }],
    })
    expect(upgrades).toBe(before)
    // the same request with `websocket` alone upgrades
    expect((await exchange(proxy.port, 'WebSocket', path)).head).toMatch(/^HTTP\/1\.1 101 /)
  })

  it('a route without WebSockets still says so', async () => {
    const { head, body } = await exchange(proxy.port, 'websocket, foo', '/off')
    expect(head).toMatch(/^HTTP\/1\.1 400 /)
    expect((JSON.parse(body) as { errors: { message: string }[] }).errors[0]!.message).toBe('WebSocket upgrades are not enabled on this route')
  })
})
