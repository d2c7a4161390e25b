// The config stream's reconnects and memory, sweep 33d. A real node:http server plays what sits at
// --control-plane; the real ControlPlaneClient connects to it.
//  - A stream that answered 200 and broke before its first event (an intermediary cutting it, a
//    server failing after its headers) reset the backoff at the 200: every next attempt waited
//    125–250 ms, about five a second for as long as it lasted, each logged "connected" and "lost".
//    It is a failed attempt now, backed off to 5 s as a refused connection is.
//  - A line that never ends was kept whole: the supervisor's heap grew until the process (the data
//    plane with it) died. An event over 64 Mi characters drops the stream as a failed attempt.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ServerResponse } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { ControlPlaneClient, MAX_SSE_EVENT_CHARS } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { waitUntil } from '../helpers/wait.ts'

const pem = () => generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString()

describe('the config stream', () => {
  let server: RawBackend | undefined
  let client: ControlPlaneClient | undefined
  let dir: string | undefined
  afterEach(async () => {
    await client?.close()
    await server?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
    client = server = dir = undefined
  })

  function newClient(url: string, logs: { level: string; msg: string; obj: Record<string, unknown> }[]): ControlPlaneClient {
    dir = mkdtempSync(join(tmpdir(), 'igw-cp33d-'))
    return new ControlPlaneClient({
      url,
      token: 't',
      stateDir: dir,
      proxyId: 'sweep33d',
      publicKeyPem: pem(),
      toConfig: () => {
        throw new Error('no config expected')
      },
      bootTimeoutMs: 2_000,
      log: (level, obj, msg) => void logs.push({ level, msg, obj }),
    })
  }

  it('answered 200 and cut before any event: backs off as a failed attempt, not a reconnect every 250 ms', async () => {
    const opened: number[] = []
    server = await startRawBackend((req, res) => {
      if (!req.url?.startsWith('/v1/stream')) return void res.writeHead(404).end()
      opened.push(Date.now())
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.flushHeaders()
      setTimeout(() => res.socket?.destroy(), 20)
    })
    const logs: { level: string; msg: string; obj: Record<string, unknown> }[] = []
    client = newClient(server.url, logs)
    expect(await client.bootstrap()).toBeUndefined() // nothing to boot from
    const from = opened.length
    // Watched until the wait between two attempts reaches 1 s (not for a fixed 7 s): backed off
    // (250 ms, 0.5, 1, 2 s with equal jitter) that is the 4th attempt after boot, ~3 s in. Old: an
    // attempt every 125–250 ms, never a 1 s wait: this runs out, dozens of attempts later.
    const maxGap = () => Math.max(0, ...opened.slice(1).map((t, i) => t - opened[i]!))
    await waitUntil(() => maxGap() >= 1_000 && opened.length - from >= 2, 15_000, 'a 1 s wait between attempts')
    // 12 leaves room for a slow machine.
    const attempts = opened.length - from
    expect(attempts).toBeGreaterThanOrEqual(2)
    expect(attempts).toBeLessThan(12)
    expect(maxGap()).toBeGreaterThanOrEqual(1_000)
    // Not a "connected" and a "lost" line per try: it never connected.
    expect(logs.filter((l) => l.msg === 'connected to the control plane')).toHaveLength(0)
    expect(logs.filter((l) => l.msg.startsWith('lost the control plane'))).toHaveLength(0)
    expect(logs.find((l) => l.msg === 'control plane unreachable')?.obj.error).toMatch(/broke before its first event/)
  }, 30_000)

  it('a stream that then gives events resets the backoff: the next cut is retried at the base delay', async () => {
    const opened: number[] = []
    let healthyFrom = Number.POSITIVE_INFINITY
    server = await startRawBackend((req, res) => {
      if (!req.url?.startsWith('/v1/stream')) return void res.writeHead(404).end()
      opened.push(Date.now())
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      // Cut before any event until healthyFrom; after it, `current` first, then the cut.
      if (opened.length >= healthyFrom) res.write('event: current\ndata: {"version":0}\n\n')
      else res.flushHeaders()
      setTimeout(() => res.socket?.destroy(), 20)
    })
    const logs: { level: string; msg: string; obj: Record<string, unknown> }[] = []
    client = newClient(server.url, logs)
    await client.bootstrap()
    // Backed off to 1–2 s by now: not reset, the next waits would be 2–4 s and more.
    await waitUntil(() => opened.length >= 4, 15_000, 'four cut streams')
    healthyFrom = opened.length + 1
    await waitUntil(() => opened.length >= healthyFrom + 3, 20_000, 'streams with an event')
    const gaps = opened.slice(healthyFrom).map((t, i) => t - opened[healthyFrom - 1 + i]!)
    expect(Math.max(...gaps)).toBeLessThan(1_500)
    expect(logs.filter((l) => l.msg === 'connected to the control plane').length).toBeGreaterThanOrEqual(1)
  }, 60_000)

  it('a line that never ends is dropped once over the bound, and the next attempt is made', async () => {
    const opened: number[] = []
    server = await startRawBackend((req, res) => {
      if (!req.url?.startsWith('/v1/stream')) return void res.writeHead(404).end()
      opened.push(Date.now())
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      if (opened.length > 1) return void res.write('event: current\ndata: {"version":0}\n\n')
      // An event that never ends: more than the bound, then nothing (the connection stays open).
      res.write('event: snapshot\ndata: ')
      void endless(res, MAX_SSE_EVENT_CHARS + 8 * 1024 * 1024)
    })
    const logs: { level: string; msg: string; obj: Record<string, unknown> }[] = []
    client = newClient(server.url, logs)
    await client.bootstrap()
    // Old: the ~72 MB line was held whole, waiting for its end: no second attempt, ever.
    await waitUntil(() => opened.length >= 2, 40_000, 'a second attempt')
    await waitUntil(() => logs.some((l) => l.msg === 'connected to the control plane'), 10_000, 'connected')
    const dropped = logs.find((l) => /over 67108864 characters/.test(String(l.obj.error)))
    expect(dropped, JSON.stringify(logs.map((l) => l.msg))).toBeDefined()
  }, 90_000)
})

/** Writes `total` bytes of "x" in 1 MiB pieces, waiting for drains; stops when the reader goes. */
async function endless(res: ServerResponse, total: number): Promise<void> {
  const piece = Buffer.alloc(1024 * 1024, 'x')
  for (let sent = 0; sent < total && !res.destroyed; sent += piece.length) {
    if (res.write(piece)) continue
    await new Promise<void>((r) => {
      const done = () => {
        res.off('drain', done).off('close', done)
        r()
      }
      res.on('drain', done).on('close', done)
    })
  }
}
