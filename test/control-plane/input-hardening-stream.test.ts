// Config streams whose proxy stops reading. Before, every commit wrote the whole snapshot again
// into the stalled stream's buffer (5 stalled readers and 60 commits of a ~1 MB document took the
// heap from 58 to 210 MB). Now a stream that has not drained gets no more snapshots queued —
// only the newest waits for it — and one that stays stalled is closed, logged and counted; a
// slow reader that catches up gets the head. Real HTTP against a real control plane on SQLite.
import { mkdtempSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { capturingLogger, metricSample, seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'

const BIG = 1024 * 1024

async function start(streamStallMs: number | undefined, logger = capturingLogger().logger): Promise<ControlPlane> {
  const dir = mkdtempSync(join(tmpdir(), 'igw-cp-stream-'))
  return startControlPlane({
    db: `sqlite:${join(dir, 'igw.db')}`,
    host: '127.0.0.1',
    port: 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')),
    seed: seedDocument(),
    logger,
    metricsListen: { host: '127.0.0.1', port: 0 },
    ...(streamStallMs === undefined ? {} : { streamStallMs }),
  })
}

async function tokens() {
  return { admin: await mintToken(TEST_AUTH_SECRET, { sub: 'stream-admin', roles: ['admin'] }), proxy: await mintToken(TEST_AUTH_SECRET, { sub: 'stream-proxy', roles: ['proxy'] }) }
}

/** Make every snapshot about 1 MB (a persisted document with a long comment), then commit `n` small changes. */
async function bigCommits(cp: ControlPlane, admin: string, n: number): Promise<void> {
  const h = { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${cp.url}/v1/tenants/churn`, { method: 'PUT', headers: h, body: JSON.stringify({ tier: 'gold', displayName: `v${i}` }) })
    expect(r.ok).toBe(true)
  }
}

async function makeDocumentBig(cp: ControlPlane, admin: string): Promise<void> {
  const r = await fetch(`${cp.url}/v1/persisted-documents/big`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ document: `query Big { __typename } #${'x'.repeat(BIG)}` }),
  })
  expect(r.ok).toBe(true)
}

/** A stream reader that reads the response head and then never reads again (a stopped proxy). */
function stalledReader(cp: ControlPlane, proxy: string, id: string, version: number): Promise<Socket> {
  const u = new URL(cp.url)
  const s = connect(Number(u.port), u.hostname)
  s.write(`GET /v1/stream?proxy=${id}&version=${version} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${proxy}\r\n\r\n`)
  return new Promise((resolve, reject) => {
    s.once('error', reject)
    s.once('data', () => {
      s.pause()
      resolve(s)
    })
  })
}

async function scrape(cp: ControlPlane): Promise<string> {
  return (await fetch(`${cp.metricsUrl}/metrics`)).text()
}

async function until<T>(fn: () => Promise<T | undefined> | T | undefined, ms: number): Promise<T> {
  const t0 = Date.now()
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() - t0 > ms) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('a proxy that stops reading its config stream', () => {
  const logs = capturingLogger()
  let cp: ControlPlane
  let t: { admin: string; proxy: string }
  const sockets: Socket[] = []
  beforeAll(async () => {
    cp = await start(5_000, logs.logger)
    t = await tokens()
    await makeDocumentBig(cp, t.admin)
  })
  afterAll(async () => {
    for (const s of sockets) s.destroy()
    await cp?.close()
  })

  it('is not sent every later snapshot: the buffer stays about one snapshot; then the stream is closed, logged and counted', async () => {
    const COMMITS = 40
    const pushes0 = metricSample(await scrape(cp), 'igw_control_plane_snapshot_pushes_total') ?? 0
    const stalled = await stalledReader(cp, t.proxy, 'stalled-1', cp.store.head()!.version)
    sockets.push(stalled)
    expect(cp.hub.connected).toBe(1)
    await bigCommits(cp, t.admin, COMMITS)
    const text = await scrape(cp)
    const pushed = (metricSample(text, 'igw_control_plane_snapshot_pushes_total') ?? 0) - pushes0
    // What the socket buffers of the loopback take before the stream blocks, plus the one that
    // waits; without the bound, every one of the 40 (~40 MB) was queued.
    expect(pushed).toBeLessThan(COMMITS / 2)
    expect(metricSample(text, 'igw_control_plane_proxies_connected')).toBe(1)
    const buffered = metricSample(text, 'igw_control_plane_stream_buffered_bytes')
    expect(buffered).toBeDefined()
    expect(buffered!).toBeLessThan(2.5 * BIG)

    // Still not read after the stall limit: closed, with a log line and a count.
    await until(() => (cp.hub.connected === 0 ? true : undefined), 10_000)
    const after = await scrape(cp)
    expect(metricSample(after, 'igw_control_plane_stream_drops_total', { reason: 'stalled' })).toBe(1)
    expect(metricSample(after, 'igw_control_plane_proxies_connected')).toBe(0)
    expect(logs.lines.find((l) => l.proxy === 'stalled-1')).toMatchObject({ level: 40, msg: 'config stream closed: the proxy stopped reading it (it reconnects and gets the head)', bufferedBytes: expect.any(Number), stalledMs: expect.any(Number) })
    const proxies = (await (await fetch(`${cp.url}/v1/proxies`, { headers: { authorization: `Bearer ${t.admin}` } })).json()) as { items: { id: string; connected: boolean }[] }
    expect(proxies.items.find((p) => p.id === 'stalled-1')).toMatchObject({ connected: false })
  }, 60_000)
})

describe('a proxy that reads slowly', () => {
  let cp: ControlPlane
  let t: { admin: string; proxy: string }
  beforeAll(async () => {
    cp = await start(undefined)
    t = await tokens()
    await makeDocumentBig(cp, t.admin)
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('gets the head once it reads again, versions in order, and keeps its stream', async () => {
    const u = new URL(cp.url)
    const start = cp.store.head()!.version
    let res!: IncomingMessage
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: u.hostname, port: u.port, path: `/v1/stream?proxy=slow-1&version=${start}`, headers: { authorization: `Bearer ${t.proxy}` } }, (r) => {
        res = r
        resolve()
      })
      req.on('error', reject)
      req.end()
    })
    expect(res.statusCode).toBe(200)
    res.setEncoding('utf8')
    let text = ''
    res.on('data', (c: string) => (text += c))
    res.pause()
    await bigCommits(cp, t.admin, 20)
    const head = cp.store.head()!.version
    expect(head).toBe(start + 20)
    res.resume()
    const ids = await until(() => {
      const found = [...text.matchAll(/^id: (\d+)\nevent: snapshot\n/gm)].map((m) => Number(m[1]))
      return found.at(-1) === head ? found : undefined
    }, 15_000)
    // Every version it got is newer than the one before; the newest is the head.
    for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!)
    expect(ids.at(-1)).toBe(head)
    expect(cp.hub.connected).toBe(1)
    res.destroy()
  }, 60_000)
})
