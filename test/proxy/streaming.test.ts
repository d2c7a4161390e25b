import { readFileSync } from 'node:fs'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { spawnIgw, writeTempConfig, type SpawnedIgw } from '../helpers/proxy.ts'

const MB = 1024 * 1024
const TOTAL = 200 * MB

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)![1])
  return kb * 1024
}

// A relayed chunk is garbage once written, but V8 frees its bytes only at a scavenge; workers
// collect every workerHeap.streamedMbPerGc MB relayed (decision 0004). Without that, CI's faster
// machine saw 99 MB here (few JS allocations per chunk, so scavenges came late).
describe('bodies stream through with bounded memory (separate igw process)', () => {
  let backend: RawBackend
  let igw: SpawnedIgw
  let uploaded = 0

  beforeAll(async () => {
    const chunk = Buffer.alloc(64 * 1024, 'x')
    backend = await startRawBackend((req, res) => {
      if (req.url === '/download' || req.url === '/warm') {
        const total = req.url === '/warm' ? 16 * MB : TOTAL
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
        let sent = 0
        const pump = () => {
          while (sent < total) {
            sent += chunk.length
            if (!res.write(chunk)) return void res.once('drain', pump)
          }
          res.end()
        }
        pump()
        return
      }
      uploaded = 0
      req.on('data', (c: Buffer) => (uploaded += c.length))
      req.on('end', () => res.end(String(uploaded)))
    })
    const cfg = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      log: { level: 'warn' },
      routes: [{ name: 'blob', upstream: backend.url, type: 'http', maxBodyBytes: '1gib', timeouts: { totalMs: 0 } }],
    })
    igw = await spawnIgw(['proxy', '--config', cfg])
  })
  afterAll(async () => {
    await igw?.stop()
    await backend?.close()
  })

  it('a 200 MB response passes and raises the proxy RSS by less than 64 MB', async () => {
    // Warm first (as the bench does): the first response through a fresh worker also pays for
    // lazy paths and JIT compilation of the relay loop, which is not what this bound is about
    // (one CI run under the full suite's load saw 75 MB with it, others 6–35 MB).
    const warm = await request(`${igw.url}/warm`)
    for await (const _ of warm.body) void _
    const before = rssBytes(igw.child.pid!)
    let peak = before
    const res = await request(`${igw.url}/download`)
    expect(res.statusCode).toBe(200)
    let received = 0
    let n = 0
    for await (const c of res.body) {
      received += (c as Buffer).length
      if (++n % 64 === 0) peak = Math.max(peak, rssBytes(igw.child.pid!))
    }
    expect(received).toBe(TOTAL)
    const growth = peak - before
    console.log(`download: RSS before ${(before / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB, growth ${(growth / MB).toFixed(1)} MB`)
    expect(growth).toBeLessThan(64 * MB)
  })

  it('a 200 MB chunked upload streams to the upstream with bounded memory', async () => {
    const before = rssBytes(igw.child.pid!)
    let peak = before
    const chunk = Buffer.alloc(64 * 1024, 'y')
    let sent = 0
    const body = new Readable({
      read() {
        if (sent >= TOTAL) return void this.push(null)
        sent += chunk.length
        if (sent % (8 * MB) === 0) peak = Math.max(peak, rssBytes(igw.child.pid!))
        this.push(chunk)
      },
    })
    const res = await request(`${igw.url}/upload`, { method: 'POST', body })
    expect(res.statusCode).toBe(200)
    expect(Number(await res.body.text())).toBe(TOTAL)
    const growth = peak - before
    console.log(`upload: RSS growth ${(growth / MB).toFixed(1)} MB`)
    expect(growth).toBeLessThan(64 * MB)
  })
})
