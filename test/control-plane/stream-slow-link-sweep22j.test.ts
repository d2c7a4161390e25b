// A proxy on a slow link taking a multi-MB snapshot keeps reading it, just slowly: its stream
// does not drain within the stall limit, but it makes progress all along. Before, a stream was
// closed once it had not DRAINED for `stallMs` — the proxy reconnected, was sent the whole
// snapshot again from its first byte, was cut again at the same point, and never got the config.
// Now a stream is closed when nothing of it has been taken for `stallMs`. A real PushHub on a
// real SQLite file behind a real HTTP server; the slow link is a loopback reader that takes a
// slice every few milliseconds (limits scaled down: 24 MB against a 400 ms stall limit).
import { mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, expect, it } from 'vitest'
import { openDb, type Db } from '../../control-plane/db.ts'
import { migrate } from '../../control-plane/migrations.ts'
import { PushHub } from '../../control-plane/push.ts'
import type { Head } from '../../control-plane/store.ts'

const MB = 1024 * 1024
const STALL_MS = 400
const head: Head = {
  version: 7,
  document: {},
  digest: 'd'.repeat(64),
  // Far more than the loopback's socket buffers take at once (a few MB).
  envelope: { payload: 'x'.repeat(24 * MB), keyId: 'k', signature: 's' },
  createdAt: Date.now(),
  author: 'test',
}

let db: Db
let hub: PushHub
let server: Server
let stalls: { proxyId: string; stalledMs: number }[]
const sockets: Socket[] = []

beforeEach(async () => {
  db = openDb(`sqlite:${join(mkdtempSync(join(tmpdir(), 'igw-slow-link-')), 'igw.db')}`)
  await migrate(db)
  stalls = []
  hub = new PushHub(db, { onStalled: (proxyId, _bytes, stalledMs) => stalls.push({ proxyId, stalledMs }) }, { stallMs: STALL_MS, heartbeatMs: 60_000 })
  server = createServer((req, res) => void hub.open(res, new URL(req.url!, 'http://x').searchParams.get('proxy')!, 'host', undefined, 0, () => head))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
})

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy()
  await hub.close()
  await new Promise<void>((r) => server.close(() => r()))
  await db.close()
})

/** A stream reader on a raw socket: `done` once the snapshot event's closing blank line arrived; `stopAt`: bytes after which it stops reading. */
function reader(proxy: string, stopAt = Infinity) {
  const s = connect((server.address() as { port: number }).port, '127.0.0.1')
  sockets.push(s)
  const st = { got: 0, head: '', done: false, closed: false, socket: s }
  let last = ''
  s.setEncoding('latin1')
  s.on('data', (d: string) => {
    st.got += d.length
    if (st.head.length < 4096) st.head += d.slice(0, 4096)
    // The response head has only CRLFs, the event's data no newline: the first blank line ends it.
    if (st.head.includes('\nevent: snapshot\ndata: ') && (last + d).includes('\n\n')) st.done = true
    last = d.slice(-1)
    if (st.got >= stopAt) s.pause()
  })
  s.on('close', () => (st.closed = true))
  s.on('error', () => undefined)
  s.write(`GET /v1/stream?proxy=${proxy} HTTP/1.1\r\nHost: x\r\n\r\n`)
  return st
}

it('a slow reader of a multi-MB snapshot gets all of it on its first stream', async () => {
  const r = reader('slow-link')
  r.socket.pause()
  // 128 KB every 5 ms: never a stall limit without progress, yet several before the buffer drains.
  while (!r.done && !r.closed) {
    r.socket.read(128 * 1024) ?? r.socket.read()
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  expect(stalls).toEqual([])
  expect(r.closed).toBe(false)
  expect(r.done).toBe(true)
  expect(r.head).toMatch(/\nid: 7\nevent: snapshot\n/)
  expect(hub.connected).toBe(1)
}, 20_000)

it('a reader that stops taking the snapshot is still closed after the stall limit', async () => {
  const r = reader('stopped', MB)
  await expect.poll(() => r.got, { timeout: 5_000 }).toBeGreaterThanOrEqual(MB)
  expect(hub.connected).toBe(1)
  // Seen on the control plane's side (the paused reader notices the close only when it reads).
  await expect.poll(() => hub.connected, { timeout: 10_000 }).toBe(0)
  expect(stalls).toEqual([{ proxyId: 'stopped', stalledMs: expect.any(Number) }])
  expect(r.done).toBe(false)
}, 20_000)
