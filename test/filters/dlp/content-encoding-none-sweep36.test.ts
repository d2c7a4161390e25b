// `Content-Encoding: none` is no registered content coding, but graphql-yoga (and others) send it
// on plain bytes, and clients (browsers, curl, undici) pass a coding they do not know through as
// it is. DLP refused such an export as uninspectable ("export has content encoding none") under
// `block`, and let it out unread under `pass`. It is now read as identity: masked like any other.
// Real proxy, a real node:http backend and an undici client on 127.0.0.1.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const NDJSON = Array.from({ length: 2000 }, (_, i) => `{"id":${i},"email":"person${i}@example.com"}\n`).join('') // past the lookahead: streamed
const JSON_BODY = JSON.stringify({ rows: [{ email: 'jane@corp.com' }] })

describe('an export sent with Content-Encoding: none', () => {
  let raw: RawBackend
  const proxies: TestProxy[] = []
  const proxy = (uninspectable: 'block' | 'pass') => {
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-none-')), 'keyring.json')
    return startTestProxy({
      dlp: { keyring: { file: keyring }, policy: { enabled: false } },
      routes: [{ name: 'api', upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', uninspectable, exports: { paths: [{ prefix: '/export/' }] } }] }],
    } as never)
  }
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const ndjson = req.url === '/export/people.ndjson'
      res.writeHead(200, { 'content-type': ndjson ? 'application/x-ndjson' : 'application/json', 'content-encoding': 'none' })
      res.end(ndjson ? NDJSON : JSON_BODY)
    })
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await raw?.close()
  })

  it('is read as identity and masked, under block and under pass alike', async () => {
    for (const mode of ['block', 'pass'] as const) {
      const p = await proxy(mode)
      proxies.push(p)
      for (const [path, count] of [['/export/people.ndjson', 2000], ['/export/people.json', 1]] as const) {
        const r = await request(`${p.url}${path}`)
        const text = await r.body.text()
        expect([mode, path, r.statusCode]).toEqual([mode, path, 200])
        expect(text).not.toMatch(/person\d+@example\.com|jane@corp\.com/)
        expect((text.match(/"email":/g) ?? []).length).toBe(count)
      }
    }
  })
})
