// Sweep 35d: an upstream that dies while many responses stream from it cut them all at once, and
// each logged its own "upstream failed mid-response" warn line (N lines in the same millisecond)
// on top of its access line and its count in igw_proxy_errors_total. The line now goes through the
// window "upstream request failed" has (sweep 34h): one per upstream and failure per 5 s, the next
// one counting those held back (`alsoFailed`); the metric still counts every one. A stalled upload
// cut after the head ("request body stalled") is one client's fault and stays a line per request.
// Through a real igw proxy, a node:http upstream, undici clients and raw TCP clients.
import { connect, type Socket } from 'node:net'
import type { ServerResponse } from 'node:http'
import { Agent, request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const N = 150

let backend: RawBackend
let proxy: TestProxy
let agent: Agent
/** Responses whose head and first bytes are out, held until the test kills the upstream. */
const held: ServerResponse[] = []

beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    if (req.url === '/early-close') return void req.socket.destroy() // before any head: "upstream request failed"
    if (req.url!.startsWith('/early')) {
      // A head at once, then a beat every 100 ms while the upload goes on (see the stalled uploads below).
      res.writeHead(200, { 'content-type': 'text/plain' })
      const beat = setInterval(() => res.write('.'), 100)
      res.on('close', () => clearInterval(beat))
      req.resume()
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }) // chunked: no length
    res.write(Buffer.alloc(1000, 97))
    held.push(res)
  })
  proxy = await startTestProxy({
    upstreams: { b: { url: backend.url, connections: 512 } },
    routes: [
      { name: 'h', match: { pathPrefix: '/' }, upstream: 'b', type: 'http', maxBodyBytes: 1 << 24, timeouts: { totalMs: 0, headersMs: 0, bodyIdleMs: 600 } },
    ],
  } as never)
  agent = new Agent({ connections: 512 })
})
afterAll(async () => {
  await agent?.close()
  await proxy?.close()
  await backend?.close()
})

const metrics = async () => (await request(`${proxy.adminUrl}/metrics`)).body.text()
const cutCount = async () => metricSum(await metrics(), 'igw_proxy_errors_total', 'route="h",code="UPSTREAM_UNAVAILABLE"')

/** `n` GETs whose heads and first bytes arrive; then the upstream dies under all of them at once. */
async function cutUnder(n: number): Promise<void> {
  held.length = 0
  const reads = Array.from({ length: n }, async (_, i) => {
    const res = await request(`${proxy.url}/stream/${i}`, { dispatcher: agent, headersTimeout: 20_000, bodyTimeout: 20_000 })
    expect(res.statusCode).toBe(200)
    let got = 0
    try {
      for await (const c of res.body) got += (c as Buffer).length
    } catch (err) {
      return { got, err }
    }
    return { got, err: undefined }
  })
  await expect.poll(() => held.length, { timeout: 20_000, interval: 20 }).toBe(n)
  for (const r of held) r.socket!.destroy()
  const ended = await Promise.all(reads)
  // Every client sees its response cut (not a short body that looks complete).
  for (const e of ended) expect(e.err).toBeDefined()
}

describe('an upstream that dies under many streaming responses', () => {
  it('N cut responses: N counted, N access lines, one warn line; the next window\'s line counts those held back', async () => {
    await cutUnder(N)
    await expect.poll(cutCount, { timeout: 10_000 }).toBe(N)
    const access = () => proxy.logs.find('access').filter((l) => l.route === 'h' && l.code === 'UPSTREAM_UNAVAILABLE')
    await expect.poll(() => access().length, { timeout: 10_000 }).toBe(N)
    const warned = proxy.logs.find('upstream failed mid-response')
    expect(warned).toHaveLength(1)
    expect(warned[0]).toMatchObject({ level: 'warn', upstream: 'b' })
    expect(warned[0]!.alsoFailed).toBeUndefined()

    // Its own window: a failure before the head on the same upstream is still logged at once.
    const early = await request(`${proxy.url}/early-close`, { method: 'POST', body: 'x', dispatcher: agent })
    expect(early.statusCode).toBe(502)
    await early.body.text()
    await expect.poll(() => proxy.logs.find('upstream request failed').length, { timeout: 5_000 }).toBe(1)

    // Past the window: the next cut is logged, with the count of those held back.
    await new Promise((r) => setTimeout(r, 5_200))
    await cutUnder(3)
    await expect.poll(cutCount, { timeout: 10_000 }).toBe(N + 1 + 3) // (and the 502)
    await expect.poll(() => proxy.logs.find('upstream failed mid-response').length, { timeout: 5_000 }).toBe(2)
    const again = proxy.logs.find('upstream failed mid-response')
    expect(again[1]).toMatchObject({ level: 'warn', upstream: 'b', alsoFailed: N - 1 })
  }, 60_000)

  it('a stalled upload cut after the head is the client\'s fault: a line per request, not windowed', async () => {
    const before = proxy.logs.find('upstream failed mid-response').length
    const stalled: { socket: Socket; got: () => string; closed: Promise<void> }[] = []
    for (let i = 0; i < 3; i++) {
      const socket = connect(proxy.port, '127.0.0.1')
      let got = ''
      socket.on('data', (c: Buffer) => (got += c.toString('latin1')))
      socket.on('error', () => undefined)
      const closed = new Promise<void>((r) => socket.once('close', () => r()))
      await new Promise<void>((r) => socket.once('connect', () => r()))
      socket.write(`PUT /early/${i} HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n${'a'.repeat(1000)}`)
      stalled.push({ socket, got: () => got, closed })
    }
    try {
      for (const s of stalled) {
        await expect.poll(s.got, { timeout: 5_000 }).toMatch(/^HTTP\/1\.1 200 /)
        await Promise.race([s.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('connection not cut')), 5_000))])
      }
      await expect.poll(() => proxy.logs.find('request body stalled').length, { timeout: 5_000 }).toBe(3)
      for (const l of proxy.logs.find('request body stalled')) expect(l).toMatchObject({ level: 'warn', upstream: 'b' })
      expect(metricSum(await metrics(), 'igw_proxy_errors_total', 'route="h",code="REQUEST_TIMEOUT"')).toBe(3)
      expect(proxy.logs.find('upstream failed mid-response')).toHaveLength(before)
    } finally {
      for (const s of stalled) s.socket.destroy()
    }
  }, 30_000)
})
