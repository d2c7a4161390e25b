// The export format came from substrings anywhere in Content-Type, parameters included: a JSON
// document labelled `application/json; profile="https://schema.example/jsonld"` was read as NDJSON
// and refused as malformed. The media type alone decides now; `application/ld+json` and Spring's
// `application/stream+json` (one record per line, now read as NDJSON) are the controls.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const PRETTY = JSON.stringify({ rows: [{ email: 'jane@corp.com' }, { email: 'joe@corp.com' }] }, null, 2)
const LINES = '{"email":"jane@corp.com"}\n{"email":"joe@corp.com"}\n'
const BODIES: Record<string, [string, string]> = {
  '/export/profile.json': ['application/json; profile="https://schema.example/jsonld"', PRETTY],
  '/export/stream.json': ['application/stream+json', LINES],
  '/export/ld.json': ['application/ld+json', PRETTY],
}

describe('DLP export format from the media type', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const b = BODIES[req.url ?? '']
      if (b === undefined) {
        res.writeHead(404)
        return res.end()
      }
      res.writeHead(200, { 'content-type': b[0] })
      res.end(b[1])
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-mt-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, policy: { allowedPresets: ['tokenize_strict'] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const get = async (path: string) => {
    const r = await request(`${proxy.url}${path}`)
    return { status: r.statusCode, text: await r.body.text() }
  }

  it.each([['/export/profile.json'], ['/export/ld.json']])('%s: a JSON document whatever its parameters say is rewritten as JSON', async (path) => {
    const r = await get(path)
    expect(r.status).toBe(200)
    const body = JSON.parse(r.text) as { rows: { email: string }[] }
    expect(body.rows.map((x) => x.email)).toEqual([expect.stringMatching(/^tok_email_k1_/), expect.stringMatching(/^tok_email_k1_/)])
  })

  it('application/stream+json: one record per line, each rewritten', async () => {
    const r = await get('/export/stream.json')
    expect(r.status).toBe(200)
    const lines = r.text.split('\n').filter((l) => l !== '')
    expect(lines).toHaveLength(2)
    for (const l of lines) expect((JSON.parse(l) as { email: string }).email).toMatch(/^tok_email_k1_/)
    expect(r.text).not.toContain('@corp.com')
  })
})
