// `exports.paths[].format: auto` (the default): the export policy's request phase was asked with
// format "auto", before the response said what it is, and never again unless a high-risk type
// showed up. A policy deciding by format ("no CSV exports") allowed every CSV export on such a
// path. Now the request phase is asked again with the format once the media type gives it.
// Real opa CLI builds the bundle, real opa-wasm evaluates it, real proxy and backend.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { opaBinary } from '../../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-format-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const NO_CSV = `package intelgraph.dlp

decision := {"allow": false, "reason": "CSV exports are not allowed"} if input.format == "csv"

decision := {"allow": true, "reason": "allowed"} if input.format != "csv"
`

function build(): string {
  const src = join(dir, 'nocsv')
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'p.rego'), NO_CSV)
  const out = join(dir, 'nocsv.tar.gz')
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/dlp/decision', '-o', out, src], { encoding: 'utf8', cwd: dir })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

describe('an export policy deciding by format, on a format: auto path', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      if (req.url!.endsWith('.csv')) {
        res.writeHead(200, { 'content-type': 'text/csv' })
        res.end('id,email\n1,jane@example.com\n')
      } else {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        res.end('{"id":1,"email":"jane@example.com"}\n')
      }
    })
    proxy = await startTestProxy({
      dlp: { keyring: { file: join(dir, 'ring.json') }, policy: { bundle: build() } },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  }, 60_000)
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('a CSV response is denied before the head with the policy reason; NDJSON is served', async () => {
    const csv = await request(`${proxy.url}/export/users.csv`)
    const text = await csv.body.text()
    expect(csv.statusCode).toBe(403)
    expect(text).toContain('DLP_BLOCKED')
    expect(text).toContain('CSV exports are not allowed')
    expect(text).not.toContain('jane')
    const metrics = await proxy.metricsText()
    expect(metricSum(metrics, 'igw_dlp_exports_total', 'format="csv",outcome="denied"')).toBe(1)

    const nd = await request(`${proxy.url}/export/users.ndjson`)
    const body = await nd.body.text()
    expect(nd.statusCode).toBe(200)
    expect(body).toMatch(/^\{"id":1,"email":"tok_email_/)
  })
})
