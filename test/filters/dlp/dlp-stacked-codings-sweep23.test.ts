// An export in stacked content codings (`Content-Encoding: deflate, gzip`: gzip over deflate,
// RFC 9110 §8.4) was read as one unknown coding. With `uninspectable: pass` it left the gateway
// unmasked; with `refuse` a readable export was refused. Each coding is now undone, the last one
// applied first, and the export is masked and served decoded. A coding DLP cannot read anywhere
// in the list still counts as uninspectable. Real proxy, real node:http backend, undici client.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { deflateSync, gzipSync } from 'node:zlib'
import { request } from 'undici'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const NDJSON = Array.from({ length: 50 }, (_, i) => `{"id":${i},"email":"person${i}@example.com"}\n`).join('')
const BODIES: Record<string, [string, Buffer]> = {
  '/export/stacked.ndjson': ['deflate, gzip', gzipSync(deflateSync(NDJSON))],
  '/export/with-identity.ndjson': ['identity, gzip', gzipSync(NDJSON)],
  '/export/unknown-inside.ndjson': ['compress, gzip', gzipSync(NDJSON)],
}

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
    const [coding, body] = BODIES[req.url!]!
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-encoding': coding, 'content-length': String(body.length) })
    res.end(body)
  })
  proxy = await startTestProxy({
    mode: 'ingress',
    dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-dlp23-')), 'keyring.json') }, policy: { allowedPresets: ['mask_basic'] } } as never,
    routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', uninspectable: 'pass', exports: { paths: [{ prefix: '/export/' }] } }] as never }],
  })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

it('undoes each coding, last applied first, and masks the export', async () => {
  for (const path of ['/export/stacked.ndjson', '/export/with-identity.ndjson']) {
    const r = await request(`${proxy.url}${path}`)
    const text = await r.body.text()
    expect(r.statusCode, path).toBe(200)
    expect(r.headers['content-encoding'], path).toBeUndefined()
    expect(text.split('\n').filter(Boolean)).toHaveLength(50)
    expect(text, path).not.toContain('person7@example.com')
  }
})

it('still counts a list with a coding it cannot read as uninspectable', async () => {
  const r = await request(`${proxy.url}/export/unknown-inside.ndjson`)
  await r.body.arrayBuffer()
  expect(r.statusCode).toBe(200) // uninspectable: pass, as configured
  expect(r.headers['content-encoding']).toBe('compress, gzip')
})
