// Persisted filter sweep 23j: limits.maxQueryBytes counted UTF-16 units, not bytes, unless the
// text was already longer than the limit in units: a query of multi-byte characters (non-Latin
// string arguments) up to three times the limit in UTF-8 bytes ran, and was registered through
// APQ (lone and batched).
// Real proxy (worker threads), a node:http backend, undici.
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const sha = (s: string) => createHash('sha256').update(s).digest('hex')
const MAX = 200

describe('persisted filter sweep 23j: maxQueryBytes in UTF-8 bytes', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => (body += c))
      req.on('end', () => {
        const answer = { data: { hello: 'world' } }
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify(body.startsWith('[') ? (JSON.parse(body) as unknown[]).map(() => answer) : answer))
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, batching: { enabled: true }, filters: [{ name: 'persisted', limits: { maxQueryBytes: MAX } }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const post = async (body: unknown) => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: r.statusCode, json: (await r.body.json()) as { errors?: { message: string; extensions: { code: string } }[] } }
  }

  it('maxQueryBytes counts UTF-8 bytes: a query of multi-byte characters past it is refused, and not registered through APQ', async () => {
    const query = (ch: string) => `{ hello(name: "${ch.repeat(100)}") }`
    const ascii = query('e')
    const accented = query('é')
    expect(Buffer.byteLength(ascii)).toBeLessThanOrEqual(MAX)
    expect(accented.length).toBe(ascii.length)
    expect(Buffer.byteLength(accented)).toBeGreaterThan(MAX)

    expect((await post({ query: ascii })).status).toBe(200)
    const lone = await post({ query: accented })
    expect(lone.status).toBe(400)
    expect(lone.json.errors?.[0]?.message).toContain(`${Buffer.byteLength(accented)} bytes exceeds the limit of ${MAX}`)

    const pq = { persistedQuery: { version: 1, sha256Hash: sha(accented) } }
    expect((await post({ query: accented, extensions: pq })).status).toBe(400)
    const hit = await post({ extensions: pq })
    expect(hit.status).toBe(200)
    expect(hit.json.errors?.[0]?.extensions.code).toBe('PERSISTED_QUERY_NOT_FOUND')

    // In a batch: refused, and its registration not kept either.
    const other = query('ü')
    const bpq = { persistedQuery: { version: 1, sha256Hash: sha(other) } }
    expect((await post([{ query: ascii }, { query: other }])).status).toBe(400)
    await post([{ query: other, extensions: bpq }])
    const bhit = await post({ extensions: bpq })
    expect(bhit.json.errors?.[0]?.extensions.code).toBe('PERSISTED_QUERY_NOT_FOUND')
  })
})
