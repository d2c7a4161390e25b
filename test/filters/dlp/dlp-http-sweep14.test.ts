// DLP sweep 14: ways an export left the gateway unvetted or left state behind, against a real
// proxy (worker threads), real node:http backends and undici clients on 127.0.0.1.
import { createHash } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { createGzip } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Client, request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

const rec = (i: number) => `{"id":${i},"email":"person${i}@example.com"}\n`
const EXPORT = rec(1) + rec(2)
const sha256 = (s: string) => createHash('sha256').update(s).digest('base64')

describe('dlp exports through a real proxy (sweep 14)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const closed = new Set<string>()
  const seen: IncomingMessage[] = []

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      seen.push(req)
      // Routing as lenient backends do it: on the decoded, cleaned path (Go's net/http, Fastify),
      // without ";" parameters (Tomcat), with "\" as "/" (IIS), case-insensitively (ASP.NET).
      const decoded = decodeURIComponent(req.url!.split('?')[0]!)
      const path = posix.normalize(decoded.replaceAll('\\', '/').replace(/;[^/]*/g, '')).toLowerCase()
      if (path.startsWith('/api/export/')) {
        const match = req.headers['if-none-match'] === `"${sha256(EXPORT)}"`
        res.writeHead(match ? 304 : 200, {
          'content-type': 'application/x-ndjson',
          etag: `"${sha256(EXPORT)}"`,
          'content-digest': `sha-256=:${sha256(EXPORT)}:`,
          'content-md5': createHash('md5').update(EXPORT).digest('base64'),
          'accept-ranges': 'bytes',
          ...(match ? {} : { 'content-length': String(EXPORT.length) }),
        })
        return res.end(match || req.method === 'HEAD' ? undefined : EXPORT)
      }
      if (path === '/gz/late-ssn.ndjson') {
        // gzip, 3000 clean records (past the lookahead), an SSN, then more records, slowly and forever
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' })
        res.on('close', () => closed.add(path))
        const gz = createGzip()
        gz.pipe(res)
        let s = ''
        for (let i = 1; i <= 3000; i++) s += rec(i)
        gz.write(s + '{"ssn":"123-45-6789"}\n')
        gz.flush()
        const t = setInterval(() => {
          gz.write(rec(9))
          gz.flush()
        }, 50)
        res.on('close', () => clearInterval(t))
        return
      }
      if (path === '/gz/stalls.ndjson' || path === '/gz/stalls-gzip.ndjson') {
        // a few records, then nothing: the export waits in the lookahead
        const gzip = path.endsWith('-gzip.ndjson')
        res.writeHead(200, { 'content-type': 'application/x-ndjson', ...(gzip ? { 'content-encoding': 'gzip' } : {}) })
        res.on('close', () => closed.add(path))
        if (!gzip) return void res.write(EXPORT)
        const gz = createGzip()
        gz.pipe(res)
        gz.write(EXPORT)
        gz.flush()
        return
      }
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"error":"not found"}')
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep14-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, policy: { allowedPresets: ['tokenize_strict'] } },
      routes: [
        {
          name: 'gz',
          match: { pathPrefix: '/gz/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0, bodyIdleMs: 120_000 },
          filters: [{ name: 'request-id' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/gz/' }] } }],
        },
        {
          name: 'api',
          match: { pathPrefix: '/' }, // the whole backend: every spelling below reaches this route
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/api/export/' }] } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const auditOf = (reqId: string) => proxy.logs.find('dlp export').filter((l) => l.reqId === reqId)

  it('an export path spelled with escapes, empty or dot segments, ";" parameters or another case is still an export', async () => {
    // undici's Client sends the path exactly as given (no URL normalization on the way)
    const client = new Client(proxy.url)
    let served = 0
    try {
      const spellings = ['/api/export/u.ndjson', '/api/%65xport/u.ndjson', '/api/%2565xport/u.ndjson', '/api//export/u.ndjson', '/api/./export/u.ndjson', '/api/x/../export/u.ndjson', '/api/export%2Fu.ndjson', '/api/export;v=1/u.ndjson', '/api\\export/u.ndjson', '/API/Export/u.ndjson']
      for (const path of spellings) {
        const r = await client.request({ path, method: 'GET', headers: { 'x-request-id': `sweep14-path-${spellings.indexOf(path)}` } })
        const text = await r.body.text()
        // the backend decoded at most once: what it did not recognize is a 404, anything else must be vetted
        if (r.statusCode === 404) continue
        served++
        expect({ path, status: r.statusCode }).toEqual({ path, status: 200 })
        expect({ path, leaked: text.includes('person1@example.com') }).toEqual({ path, leaked: false })
        expect(text).toMatch(/"email":"tok_email_/)
      }
      // the backend served (all but the twice-encoded one): otherwise the test proves nothing
      expect(served).toBe(spellings.length - 1)
    } finally {
      await client.close()
    }
    // a path that is no export stays untouched
    const other = await request(`${proxy.url}/api/other`)
    expect(other.statusCode).toBe(404)
    expect(await other.body.text()).toBe('{"error":"not found"}')
  })

  it("an export carries no ETag or digest of the upstream's bytes, and conditional headers do not reach the upstream", async () => {
    const r = await request(`${proxy.url}/api/export/u.ndjson`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain('person1@example.com')
    // A hash of the unmasked body beside the masked body confirms guesses at what was hidden.
    for (const h of ['etag', 'content-digest', 'content-md5', 'accept-ranges']) expect({ h, v: r.headers[h] }).toEqual({ h, v: undefined })
    // HEAD: the same headers, no body
    const head = await request(`${proxy.url}/api/export/u.ndjson`, { method: 'HEAD' })
    await head.body.dump()
    expect(head.headers.etag).toBeUndefined()
    expect(head.headers['content-digest']).toBeUndefined()
    // a guessed tag is not an oracle: the upstream never sees it, the answer is the vetted export
    const before = seen.length
    const guess = await request(`${proxy.url}/api/export/u.ndjson`, { headers: { 'if-none-match': `"${sha256(EXPORT)}"`, 'if-match': '"x"' } })
    const guessText = await guess.body.text()
    expect(guess.statusCode).toBe(200)
    expect(guessText).toMatch(/"email":"tok_email_/)
    const upstreamSaw = seen.slice(before)
    expect(upstreamSaw).toHaveLength(1)
    expect(upstreamSaw[0]!.headers['if-none-match']).toBeUndefined()
    expect(upstreamSaw[0]!.headers['if-match']).toBeUndefined()
  })

  it('a gzip export blocked mid-stream stops the upstream transfer (the connection is not left open)', async () => {
    const r = await request(`${proxy.url}/gz/late-ssn.ndjson`)
    expect(r.statusCode).toBe(200)
    const text = await r.body.text()
    expect(text).not.toContain('123-45-6789')
    const last = JSON.parse(text.trim().split('\n').at(-1)!) as { errors: { extensions: { code: string; records: number } }[] }
    expect(last.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', records: 3000 })
    await expect.poll(() => closed.has('/gz/late-ssn.ndjson'), { timeout: 15_000, interval: 50 }).toBe(true)
  })

  it.each([
    ['identity', '/gz/stalls.ndjson'],
    ['gzip', '/gz/stalls-gzip.ndjson'],
  ])('a client that leaves while the export is in the lookahead (%s): the upstream stops, and the export gets its audit line', async (_enc, path) => {
    const reqId = `sweep14-leaves-${_enc}`
    const interruptedBefore = metricSum(await proxy.metricsText(), 'igw_dlp_exports_total', 'outcome="interrupted"')
    const ac = new AbortController()
    const pending = request(`${proxy.url}${path}`, { signal: ac.signal, headers: { 'x-request-id': reqId } }).catch((e: unknown) => e)
    await waitUntil(() => seen.some((q) => q.url === path && q.headers['x-request-id'] === reqId), 10_000, 'upstream request')
    await new Promise((r) => setTimeout(r, 200)) // the first records are in the lookahead
    ac.abort()
    expect(await pending).toBeInstanceOf(Error)
    await expect.poll(() => closed.has(path), { timeout: 15_000, interval: 50 }).toBe(true)
    await expect.poll(() => auditOf(reqId).length, { timeout: 15_000, interval: 50 }).toBe(1)
    expect(auditOf(reqId)[0]).toMatchObject({ outcome: 'interrupted', phase: 'before-head', interrupted: 'the client went away before the export was inspected' })
    await expect.poll(async () => metricSum(await proxy.metricsText(), 'igw_dlp_exports_total', 'outcome="interrupted"'), { timeout: 15_000 }).toBe(interruptedBefore + 1)
  })
})
