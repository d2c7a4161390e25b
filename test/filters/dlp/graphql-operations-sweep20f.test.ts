// DLP sweep 20f: `exports.graphql.operations` (no responsePaths) and GraphQL requests whose
// operation the gateway cannot read — a persisted hash or documentId the upstream resolves itself,
// or a document over the parser's token limit. Which operation runs is unknown here (an
// operationName beside a hash is only the client's word), so the whole response is inspected;
// they came back unmasked. Real proxy (worker thread), a real node:http backend, undici.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const EMAIL = 'jane.doe@corp.example.com'
const HASH = 'ab'.repeat(32)

describe('dlp: GraphQL export operations the gateway cannot read (sweep 20f)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    // Resolves every request (hashes included) to the export operation's answer.
    raw = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ data: { users: [{ id: 1, email: EMAIL }] } }))
      })
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep20f-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring } },
      routes: [
        {
          name: 'g',
          match: { pathPrefix: '/graphql' },
          upstream: raw.url,
          type: 'graphql',
          filters: [{ name: 'dlp', preset: 'tokenize_strict', exports: { graphql: { operations: ['ExportUsers'] } } }],
        },
      ],
    })
  })

  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  async function post(body: unknown): Promise<{ status: number; dlp: unknown; text: string }> {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    return { status: r.statusCode, dlp: r.headers['x-dlp'], text: await r.body.text() }
  }

  it('the export operation sent as text is tokenized; another named operation is not an export (the controls)', async () => {
    const a = await post({ query: 'query ExportUsers { users { id email } }' })
    expect(a.status).toBe(200)
    expect(a.text).not.toContain(EMAIL)
    expect(a.text).toContain('tok_email_')
    const b = await post({ query: 'query Other { users { id email } }' })
    expect(b.text).toContain(EMAIL)
    expect(b.dlp).toBeUndefined()
  })

  it.each([
    ['a persisted hash without operationName', { extensions: { persistedQuery: { version: 1, sha256Hash: HASH } } }],
    ['a persisted hash naming another operation', { operationName: 'Other', extensions: { persistedQuery: { version: 1, sha256Hash: HASH } } }],
    ['a documentId', { documentId: 'export-users-v1' }],
  ])('%s is inspected whole (it came back unmasked)', async (_what, body) => {
    const r = await post(body)
    expect(r.status).toBe(200)
    expect(r.text).not.toContain(EMAIL)
    expect(r.text).toContain('tok_email_')
    expect(String(r.dlp)).toContain('tokenized=1')
  })

  it('a GET with only a persisted hash is inspected whole', async () => {
    const ext = encodeURIComponent(JSON.stringify({ persistedQuery: { version: 1, sha256Hash: HASH } }))
    const r = await request(`${proxy.url}/graphql?extensions=${ext}`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain(EMAIL)
    expect(text).toContain('tok_email_')
  })

  it('the export operation in a document over the parser token limit (no operationName) is inspected whole', async () => {
    const query = `query ExportUsers { users { id email ${'x '.repeat(100_001)}} }`
    const r = await post({ query })
    expect(r.status).toBe(200)
    expect(r.text).not.toContain(EMAIL)
    expect(r.text).toContain('tok_email_')
  })
})
