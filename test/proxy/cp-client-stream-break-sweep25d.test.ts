// The config stream's reconnect backoff, sweep 25d. A stream that broke with a network error (a
// reset, a flapping path) after it had given its first event counted as a "quick end" — the
// signal kept for twin proxies, which the control plane ends cleanly — so a flapping network path
// pushed reconnects out to 30 s. As Envoy's xDS client resets its backoff once a stream got a
// response, such a break is a success now. A real node:http server plays the control plane.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient, ReconnectPolicy } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('a config stream that breaks after its first event', () => {
  let server: RawBackend
  let dir: string
  let client: ControlPlaneClient | undefined
  const opened: number[] = []
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'igw-cp25d-'))
    // Answers as the control plane does (`current`: nothing newer), then the path drops it.
    server = await startRawBackend((req, res) => {
      if (!req.url?.startsWith('/v1/stream')) return void res.writeHead(404).end()
      opened.push(Date.now())
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('event: current\ndata: {"version":0}\n\n')
      setTimeout(() => res.socket?.destroy(), 20)
    })
  })
  afterAll(async () => {
    await client?.close()
    await server?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('reconnects at the base delay every time, not backing off towards 30 s', async () => {
    await client?.close() // a retried run starts afresh
    opened.length = 0
    const { publicKey } = generateKeyPairSync('ed25519')
    client = new ControlPlaneClient({
      url: server.url,
      token: 't',
      stateDir: dir,
      proxyId: 'flap',
      publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      toConfig: () => {
        throw new Error('no config expected')
      },
      bootTimeoutMs: 2_000,
      log: () => undefined,
    })
    expect(await client.bootstrap()).toBeUndefined() // the store is empty: nothing to boot from
    // Old: the k-th break waited 2^(k-1) × 125–250 ms — ten streams took well over 30 s.
    await waitUntil(() => opened.length >= 10, 6_000, 'ten streams')
    const gaps = opened.slice(1, 10).map((t, i) => t - opened[i]!)
    expect(Math.max(...gaps)).toBeLessThan(2_000)
  })

  it('ReconnectPolicy: a healthy break resets the backoff; one before any event backs off as a failed attempt, to 5 s at most', () => {
    const r = new ReconnectPolicy(undefined, () => 1)
    for (let i = 0; i < 10; i++) expect(r.broke(1_000, true)).toBe(250)
    const u = new ReconnectPolicy(undefined, () => 1)
    expect(Array.from({ length: 8 }, () => u.broke(1_000, false))).toEqual([250, 500, 1_000, 2_000, 4_000, 5_000, 5_000, 5_000])
    // Breaks count no quick end: a clean end after them is the first.
    expect(r.ended(1_000)).toMatchObject({ quick: true, quickEnds: 1 })
  })
})
