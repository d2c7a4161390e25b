// shutdown.idleGraceMs: how long idle keep-alive connections stay open into a drain, so a request
// already on its way on one is answered (Connection: close) rather than dropped. Real proxy, real
// backend, a raw keep-alive client that sends its second request after the drain has begun.
import { connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const opened: { close(): Promise<unknown> }[] = []
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close().catch(() => undefined)
})

/** A keep-alive connection: sends GETs, collects the bytes, notes its close. */
async function keepAlive(port: number): Promise<{ socket: Socket; text: () => string; closed: Promise<void>; get: () => void }> {
  const socket = connect(port, '127.0.0.1')
  let text = ''
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
  socket.on('error', () => undefined)
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  return { socket, text: () => text, closed, get: () => socket.write('GET /x HTTP/1.1\r\nhost: x\r\n\r\n') }
}

async function setup(shutdown: { drainTimeoutMs: number; idleGraceMs?: number }): Promise<{ backend: RawBackend; proxy: TestProxy }> {
  const backend = await startRawBackend(echoHandler)
  opened.push(backend)
  const proxy = await startTestProxy({ shutdown, routes: [{ name: 'r', upstream: backend.url, type: 'http' }] })
  opened.push(proxy)
  return { backend, proxy }
}

// Status lines (the echo's bodies end without a newline, so the next one starts mid-line).
const responses = (text: string) => text.match(/HTTP\/1\.1 \d{3} /g) ?? []

describe('shutdown.idleGraceMs', () => {
  it('a request sent on an idle keep-alive connection inside the grace is answered, with Connection: close', async () => {
    const { proxy } = await setup({ drainTimeoutMs: 20_000, idleGraceMs: 5_000 })
    const c = await keepAlive(Number(new URL(proxy.url).port))
    c.get()
    await expect.poll(() => responses(c.text()).length, { timeout: 10_000 }).toBe(1)
    const closing = proxy.close()
    opened.pop()
    // The drain has begun, and is past the default grace (1 s, which would have closed the
    // connection by now), when the second request goes out.
    await expect.poll(() => proxy.logs.find('draining').length, { timeout: 10_000 }).toBe(1)
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    c.get()
    await expect.poll(() => responses(c.text()).length, { timeout: 4_000 }).toBe(2)
    const second = c.text().slice(c.text().lastIndexOf('HTTP/1.1 '))
    expect(second).toMatch(/^HTTP\/1\.1 200/)
    expect(second.toLowerCase()).toContain('connection: close')
    await c.closed
    await closing
  })

  it('0 closes idle keep-alive connections as the drain begins: the drain does not wait on them', async () => {
    const { proxy } = await setup({ drainTimeoutMs: 20_000, idleGraceMs: 0 })
    const c = await keepAlive(Number(new URL(proxy.url).port))
    c.get()
    await expect.poll(() => responses(c.text()).length, { timeout: 10_000 }).toBe(1)
    const closing = proxy.close()
    opened.pop()
    // Closed by the proxy without a second request: with the default grace it would stay open 1 s,
    // with 5 s (above) it stays open until used.
    await c.closed
    expect(responses(c.text())).toHaveLength(1)
    await closing
  })
})
