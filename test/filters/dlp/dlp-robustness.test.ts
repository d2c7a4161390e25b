// DLP robustness: a hostile client and a misbehaving backend against a real proxy (worker
// threads), real backends and undici clients on 127.0.0.1. Each test names what must not leak.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { sampleEntity } from '../../../proxy/demo-backend.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

// Every action that hides a value; ssn/card/iban redacted so nothing blocks.
const ALL = { email: 'tokenize', phone_e164: 'hash', ssn_us: 'redact', credit_card: 'redact', iban: 'redact', ipv4: 'mask', ipv6: 'mask' } as const

interface GqlBody {
  data?: Record<string, unknown>
  errors?: { message: string; extensions: Record<string, unknown> }[]
}

describe('dlp robustness through a real proxy', () => {
  let demo: DemoBackend
  let raw: RawBackend
  let proxy: TestProxy
  const handlers = new Map<string, Handler>()
  const seen: IncomingMessage[] = []

  beforeAll(async () => {
    demo = await startDemoBackend()
    raw = await startRawBackend((req, res) => {
      seen.push(req)
      const path = new URL(req.url!, 'http://x').pathname
      const h = handlers.get(path)
      if (h !== undefined) return h(req, res)
      res.writeHead(404)
      res.end()
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-robust-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      dlp: {
        keyring: { file: keyring },
        presets: { all: ALL },
        policy: { allowedPresets: ['all', 'tokenize_strict'] },
      },
      routes: [
        {
          name: 'raw',
          match: { pathPrefix: '/raw/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'dlp', preset: 'all', exports: { paths: [{ prefix: '/raw/' }] } }],
        },
        {
          name: 'strict',
          match: { pathPrefix: '/strict/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/strict/' }] } }],
        },
        {
          name: 'gqlraw',
          match: { pathPrefix: '/gqlraw' },
          upstream: raw.url,
          type: 'graphql',
          batching: { enabled: true },
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'dlp', preset: 'all', exports: { graphql: { responsePaths: ['entities'] } } }],
        },
        {
          name: 'api',
          upstream: demo.url,
          type: 'graphql',
          batching: { enabled: true },
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'dlp', preset: 'all', exports: { graphql: { responsePaths: ['entities'] } } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
    await raw?.close()
  })

  const get = (path: string, headers: Record<string, string> = {}) => request(`${proxy.url}${path}`, { headers: { 'x-tenant-id': 'acme', ...headers } })
  const post = (path: string, body: unknown) => request(`${proxy.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify(body) })
  const serve = (path: string, contentType: string, body: string | Buffer, extra: Record<string, string> = {}) =>
    handlers.set(path, (_req, res) => {
      res.writeHead(200, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)), ...extra })
      res.end(body)
    })

  it('GraphQL: an alias on a listed response path does not take it out of DLP', async () => {
    const e1 = sampleEntity(1)
    const r = await post('/graphql', { query: '{ x: entities(first: 2) { email ssn } }' })
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain(e1.email)
    expect(text).not.toContain(e1.ssn)
    expect(r.headers['x-dlp']).toMatch(/tokenized=2; .*redacted=2/)
    // Many aliases (more than the 31 paths a scope bit mask holds) and aliases inside fragments.
    const many = Array.from({ length: 40 }, (_, i) => `a${i}: entities(first: 1) { email }`).join(' ')
    const m = await post('/graphql', { query: `{ ${many} }` })
    expect(await m.body.text()).not.toContain(e1.email)
    const f = await post('/graphql', { query: '{ ...F } fragment F on Query { y: entities(first: 1) { ... on Entity { z: email } } }' })
    expect(await f.body.text()).not.toContain(e1.email)
    // Not an export: untouched.
    const plain = await post('/graphql', { query: '{ hello e: entity(id: "1") { email } }' })
    expect(plain.headers['x-dlp']).toBeUndefined()
    expect(await plain.body.text()).toContain(e1.email)
  })

  it('GraphQL: a batch or a query DLP cannot see (persisted hash, documentId) is judged as an export, whole response', async () => {
    const rows = JSON.stringify({ data: { entities: [{ email: 'alice@example.com', ssn: '123-45-6789' }] } })
    handlers.set('/gqlraw', (req, res) => {
      const batch = req.method === 'POST' && req.headers['x-batch'] === '1'
      const body = batch ? `[${rows},${rows}]` : rows
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(body)
    })
    const batch = await request(`${proxy.url}/gqlraw`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', 'x-batch': '1' },
      body: JSON.stringify([{ query: '{ entities { email ssn } }' }, { query: '{ entities { email ssn } }' }]),
    })
    const bt = await batch.body.text()
    expect(batch.statusCode).toBe(200)
    expect(bt).not.toContain('alice@example.com')
    expect(bt).not.toContain('123-45-6789')
    expect(bt).toContain('[redacted:ssn_us]')
    const hash = 'ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38'
    const apq = await get(`/gqlraw?extensions=${encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: hash } }))}`)
    const at = await apq.body.text()
    expect(apq.statusCode).toBe(200)
    expect(at).not.toContain('alice@example.com')
    const doc = await post('/gqlraw', { documentId: 'sha256:abc' })
    expect(await doc.body.text()).not.toContain('alice@example.com')
  })

  it('Range requests do not reach the upstream of an export, and a 206 is never passed unvetted', async () => {
    const csv = 'name,email,ssn\nalice,alice@example.com,123-45-6789\nbob,bob@example.com,234-56-7890\n'
    handlers.set('/raw/range.csv', (req, res) => {
      const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
      if (m === null) {
        res.writeHead(200, { 'content-type': 'text/csv', 'accept-ranges': 'bytes', 'content-length': String(csv.length) })
        return res.end(csv)
      }
      const start = Number(m[1])
      const end = m[2] === '' ? csv.length - 1 : Number(m[2])
      const part = csv.slice(start, end + 1)
      res.writeHead(206, { 'content-type': 'text/csv', 'content-range': `bytes ${start}-${end}/${csv.length}`, 'content-length': String(part.length) })
      res.end(part)
    })
    const before = seen.length
    const r = await get('/raw/range.csv', { range: `bytes=${csv.indexOf('alice')}-` })
    const text = await r.body.text()
    expect(text).not.toContain('alice@example.com')
    expect(text).not.toContain('123-45-6789')
    expect(seen.slice(before).every((q) => q.headers.range === undefined && q.headers['if-range'] === undefined)).toBe(true)
    expect(r.statusCode).toBe(200)
    expect(text.split('\n')[0]).toBe('name,email,ssn')
    // A backend that answers 206 anyway: partial content lacks its context (header row, keys).
    serve('/raw/always206.ndjson', 'application/x-ndjson', '"123456789"\n', { 'content-range': 'bytes 8-19/21' })
    handlers.set('/raw/always206.ndjson', (_req, res) => {
      res.writeHead(206, { 'content-type': 'application/x-ndjson', 'content-range': 'bytes 8-19/21' })
      res.end('"123456789"\n')
    })
    const p = await get('/raw/always206.ndjson')
    const pt = await p.body.text()
    expect(p.statusCode).toBe(403)
    expect(pt).not.toContain('123456789')
    expect((JSON.parse(pt) as GqlBody).errors![0]!.extensions.code).toBe('DLP_BLOCKED')
  })

  it('a number under a sensitive field name is acted on like the same value as a string', async () => {
    serve('/raw/numbers.ndjson', 'application/x-ndjson', '{"id":12345678901234567890,"ssn":123456789,"card_number":4111111111111111,"phone":2025550123,"n":4111111111111111}\n')
    const r = await get('/raw/numbers.ndjson')
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    const rec = JSON.parse(text) as Record<string, unknown>
    expect(text).toContain('"id":12345678901234567890') // digits kept: not a sensitive field
    expect(rec.ssn).toBe('[redacted:ssn_us]')
    expect(rec.card_number).toBe('[redacted:credit_card]')
    expect(String(rec.phone)).toMatch(/^hsh_phone_e164_/)
    expect(text).not.toContain('123456789,')
    expect(r.trailers['x-dlp'] ?? r.headers['x-dlp']).toMatch(/redacted=2/)
  })

  it('PII in JSON keys and in a CSV header row is acted on', async () => {
    serve('/raw/keys.json', 'application/json', '{"byEmail":{"alice@example.com":{"n":1},"bob\\u0040example.com":{"n":2}},"123-45-6789":true}')
    const r = await get('/raw/keys.json')
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain('alice@example.com')
    expect(text).not.toContain('bob')
    expect(text).not.toContain('123-45-6789')
    const doc = JSON.parse(text) as { byEmail: Record<string, unknown> }
    expect(Object.keys(doc.byEmail).every((k) => k.startsWith('tok_email_'))).toBe(true)
    // the same key in many records (the key memo) stays acted on in every record
    serve('/raw/keys.ndjson', 'application/x-ndjson', '{"alice@example.com":1}\n'.repeat(5))
    const n = await get('/raw/keys.ndjson')
    const nt = await n.body.text()
    expect(nt).not.toContain('alice@example.com')
    expect(nt.trim().split('\n')).toHaveLength(5)
    // a headerless CSV under `header: true`: the first row is data, and must not pass unread
    serve('/raw/headerless.csv', 'text/csv', 'alice,alice@example.com,123-45-6789\nbob,bob@example.com,234-56-7890\n')
    const c = await get('/raw/headerless.csv')
    const ct = await c.body.text()
    expect(c.statusCode).toBe(200)
    expect(ct).not.toContain('alice@example.com')
    expect(ct).not.toContain('123-45-6789')
  })
  const record = (i: number) => `{"id":${i},"email":"person${i}@example.com","note":"order ${100000 + i}"}\n`
  const auditOf = (reqId: string) => proxy.logs.find('dlp export').filter((l) => l.reqId === reqId)
  const dlpFilterErrors = async () => metricSum(await proxy.metricsText(), 'igw_filter_errors_total', 'filter="dlp"')

  it('a gzip body that does not decode is refused as a malformed export (403 DLP_BLOCKED), not a DLP failure', async () => {
    serve('/raw/badgzip.ndjson', 'application/x-ndjson', Buffer.concat([gzipSync(record(1)).subarray(0, 12), Buffer.from(record(2))]), { 'content-encoding': 'gzip' })
    const errors = await dlpFilterErrors()
    const r = await get('/raw/badgzip.ndjson')
    const text = await r.body.text()
    expect(r.statusCode).toBe(403)
    expect(text).not.toContain('person2@example.com')
    const body = JSON.parse(text) as GqlBody
    expect(body.errors![0]!.extensions.code).toBe('DLP_BLOCKED')
    expect(body.errors![0]!.message).toMatch(/gzip/)
    expect(await dlpFilterErrors()).toBe(errors)
    const id = String(r.headers['x-request-id'])
    await waitUntil(() => auditOf(id).length === 1, 5000, 'audit line')
    expect(auditOf(id)[0]).toMatchObject({ outcome: 'malformed', phase: 'before-head' })
  })

  it('a backend that dies inside the lookahead: 502 UPSTREAM_UNAVAILABLE, not blamed on DLP, one audit line', async () => {
    handlers.set('/raw/dies-early.ndjson', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.write(record(1) + record(2).slice(0, 20))
      setTimeout(() => res.socket?.destroy(), 20)
    })
    const errors = await dlpFilterErrors()
    const r = await get('/raw/dies-early.ndjson', { 'x-request-id': 'robust-dies-early' })
    const text = await r.body.text()
    expect(r.statusCode).toBe(502)
    expect((JSON.parse(text) as GqlBody).errors![0]!.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(text).not.toContain('person1@example.com')
    expect(await dlpFilterErrors()).toBe(errors)
    await waitUntil(() => auditOf('robust-dies-early').length === 1, 5000, 'audit line')
    expect(auditOf('robust-dies-early')[0]).toMatchObject({ outcome: 'interrupted', phase: 'before-head' })
  })

  it('a backend that dies after the head: the stream is cut, what arrived is transformed, one audit line counts it', async () => {
    const n = 2000 // ~130 KB: past the 64 KiB lookahead
    handlers.set('/raw/dies-late.ndjson', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      let s = ''
      for (let i = 1; i <= n; i++) s += record(i)
      res.write(s + record(n + 1).slice(0, 30))
      setTimeout(() => res.socket?.destroy(), 50)
    })
    const r = await get('/raw/dies-late.ndjson', { 'x-request-id': 'robust-dies-late' })
    expect(r.statusCode).toBe(200)
    let text = ''
    await expect(
      (async () => {
        for await (const c of r.body) text += (c as Buffer).toString()
      })(),
    ).rejects.toThrow()
    expect(text).not.toMatch(/person\d+@example\.com/)
    expect(text.length).toBeGreaterThan(64 * 1024)
    await waitUntil(() => auditOf('robust-dies-late').length === 1, 5000, 'audit line')
    const audit = auditOf('robust-dies-late')[0]!
    expect(audit).toMatchObject({ outcome: 'interrupted', phase: 'mid-stream', counts: { email: { tokenize: n } } })
  })

  it('a client that leaves mid-export: the upstream stops and the export still gets its audit line', async () => {
    let sent = 0
    let closed = false
    handlers.set('/raw/endless.ndjson', (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.on('close', () => (closed = true))
      let i = 0
      const pump = () => {
        while (!res.destroyed && sent < 50 * 1024 * 1024) {
          const chunk = Array.from({ length: 100 }, () => record(++i)).join('')
          sent += chunk.length
          if (!res.write(chunk)) return void res.once('drain', pump)
        }
        if (!res.destroyed) res.end()
      }
      pump()
    })
    const r = await get('/raw/endless.ndjson', { 'x-request-id': 'robust-client-leaves' })
    let got = 0
    for await (const c of r.body) {
      got += (c as Buffer).length
      if (got > 256 * 1024) break // leaves: undici destroys the body
    }
    await waitUntil(() => closed, 10_000, 'upstream closed')
    expect(sent).toBeLessThan(50 * 1024 * 1024)
    await waitUntil(() => auditOf('robust-client-leaves').length === 1, 5000, 'audit line')
    expect(auditOf('robust-client-leaves')[0]).toMatchObject({ outcome: 'interrupted', phase: 'mid-stream' })
    // and the proxy still serves
    serve('/raw/after.ndjson', 'application/x-ndjson', record(1))
    const after = await get('/raw/after.ndjson')
    expect(await after.body.text()).toMatch(/^\{"id":1,"email":"tok_email_/)
  })
})

describe('dlp export session: chunk boundaries anywhere', () => {
  const pack = RulePack.load(BUILTIN_RULE_PACK)
  const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', created: '2026-01-01T00:00:00.000Z', secret: new Uint8Array(32).fill(7) }]]) })

  async function run(format: 'json' | 'ndjson' | 'csv', pieces: Buffer[]): Promise<{ out: string; stop: string | undefined }> {
    const scanner = new ExportScanner(pack, compileActions(pack, ALL), tokenizer)
    const session = new ExportSession(scanner, { format, maxTokenChars: 1024 * 1024, csvHeader: true, csvDelimiter: ',', judge: undefined })
    let out = ''
    for (const p of pieces) out += (await session.write(p))?.toString('utf8') ?? ''
    out += (await session.end())?.toString('utf8') ?? ''
    return { out, stop: session.stop?.kind }
  }

  // multi-byte UTF-8, escapes (\u0040 is "@"), a surrogate pair, PII in a key, a number under
  // a sensitive key, a number longer than the old 64-character carry limit, no final newline
  const NDJSON = [
    String.raw`{"name":"Zoë 😀","email":"jos\u0065@example.com","k\u00e9y":"\ud83d\ude00 call +1 202 555 0147"}`,
    String.raw`{"user\u0040example.com":{"ssn":123456789},"big":` + '9'.repeat(100) + String.raw`,"s":"\\\"quoted\\"}`,
    '',
    '  {"card":"4111 1111 1111 1111","ip":"203.0.113.9","é":"ü"}',
  ].join('\n')

  it('NDJSON split at every byte gives the output of the whole, and nothing sensitive survives', async () => {
    const bytes = Buffer.from(NDJSON)
    const whole = await run('ndjson', [bytes])
    expect(whole.stop).toBeUndefined()
    for (const v of ['jose@', 'jos\\u0065@', '202 555 0147', 'user\\u0040example.com', '123456789', '4111 1111', '203.0.113.9']) expect(whole.out).not.toContain(v)
    expect(whole.out).toContain('9'.repeat(100))
    expect(whole.out.split('\n')).toHaveLength(4)
    for (let at = 1; at < bytes.length; at++) {
      const split = await run('ndjson', [bytes.subarray(0, at), bytes.subarray(at)])
      if (split.out !== whole.out || split.stop !== undefined) throw new Error(`split at byte ${at}: ${split.stop ?? 'different output'}`)
    }
    const ones = await run('ndjson', [...bytes].map((b) => Buffer.from([b])))
    expect(ones).toEqual(whole)
  })

  it('a value split mid-escape or mid-character, and broken input, fail closed the same at every split', async () => {
    for (const bad of ['{"a":"\\u00g9"}\n', '{"a":"\\ud83d"', '{"a":tru}\n', '{"a":123-45-6789}\n', '{"a":1}}\n']) {
      const bytes = Buffer.from(bad)
      expect((await run('ndjson', [bytes])).stop).toBe('malformed')
      for (let at = 1; at < bytes.length; at++) expect((await run('ndjson', [bytes.subarray(0, at), bytes.subarray(at)])).stop).toBe('malformed')
    }
  })
})
