// DLP sweep 19b: an export on a route whose cache sits after DLP in the chain (a supported
// order: DLP masks the cache's hits). The cache holds the upstream's head, ETag included; a
// conditional request must not get that tag, nor confirm a guess at it. Real proxy (worker
// threads), a real node:http backend, undici clients, loopback only.
import { createHash } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const EXPORT = '{"data":{"users":[{"id":"1","email":"jane.roe@example.com"},{"id":"2","email":"john.doe@example.com"}]}}'
// (A backend answering GraphQL GETs with a validator and a max-age, as a CDN-fronted one does.)
// The tag many servers send: a hash of the body (here of the unmasked export).
const RAW_TAG = `"${createHash('sha256').update(EXPORT).digest('base64url')}"`

describe('dlp before cache: conditional requests to a cached export (sweep 19b)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  let upstreamHits = 0

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      upstreamHits++
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=300', etag: RAW_TAG, 'content-length': String(Buffer.byteLength(EXPORT)) })
      res.end(req.method === 'HEAD' ? undefined : EXPORT)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-dlp-19b-cache-')), 'keyring.json') }, presets: { m: { email: 'mask' } }, policy: { enabled: false } },
      routes: [
        {
          name: 'graphql',
          upstream: raw.url,
          type: 'graphql',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'm', exports: { graphql: { responsePaths: ['users'] } } }, { name: 'cache', requireTenant: false }],
        },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const get = async (headers: Record<string, string> = {}) => {
    const r = await request(`${proxy.url}/graphql?query=${encodeURIComponent('{ users { id email } }')}`, { headers })
    return { status: r.statusCode, headers: r.headers, text: await r.body.text() }
  }

  it("a cache hit never answers with the upstream's ETag, nor confirms a guessed one with a 304", async () => {
    const first = await get()
    expect(first.status).toBe(200)
    expect(first.text).toContain('j***@example.com')
    expect(first.text).not.toContain('jane.roe@')
    expect(first.headers.etag).toBeUndefined()
    // Filled: the next ones are hits (the backend is not asked again).
    const before = upstreamHits
    const hit = await get()
    expect(hit.headers['x-cache']).toBe('HIT')
    expect(hit.text).toBe(first.text)
    expect(hit.headers.etag).toBeUndefined()
    // `If-None-Match: *` matches any stored tag: the 304 carried the stored head — the ETag
    // computed over the unmasked export.
    const star = await get({ 'if-none-match': '*' })
    expect(star.headers.etag).toBeUndefined()
    expect(JSON.stringify(star.headers)).not.toContain(RAW_TAG.slice(1, -1))
    // A guess at the unmasked bytes (their hash) was confirmed by a 304, refuted by a 200.
    const guess = await get({ 'if-none-match': RAW_TAG })
    expect(guess.status).toBe(200)
    expect(guess.text).toBe(first.text)
    expect(upstreamHits).toBe(before) // still served from the cache, masked
  })
})
