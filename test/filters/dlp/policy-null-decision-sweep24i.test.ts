// DLP sweep 24i: an export policy whose decision is null (`decision := null`, a rule an operator
// left unfinished) made the gateway read `null.allow`: a 500 and a filter error instead of the
// documented deny (403 DLP_BLOCKED, "gave no decision"). Real opa CLI builds the bundle, real
// opa-wasm evaluates it, real proxy and backend on loopback.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { opaBinary } from '../../../policies/toolchain.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-null-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function build(): string {
  const src = join(dir, 'null')
  mkdirSync(src, { recursive: true })
  writeFileSync(join(src, 'p.rego'), 'package intelgraph.dlp\n\ndecision := null\n')
  const out = join(dir, 'null.tar.gz')
  const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/dlp/decision', '-o', out, src], { encoding: 'utf8', cwd: dir })
  if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
  return out
}

describe('an export policy whose decision is null (sweep 24i)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.end('{"id":1,"email":"jane@example.com"}\n')
    })
    proxy = await startTestProxy({
      dlp: { keyring: { file: join(dir, 'ring.json') }, policy: { bundle: build() } },
      routes: [{ name: 'raw', upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/', format: 'ndjson' }] } }] }],
    })
  }, 60_000)
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('denies the export with 403 DLP_BLOCKED, not a filter failure', async () => {
    const res = await request(`${proxy.url}/export/users.ndjson`)
    const text = await res.body.text()
    expect(res.statusCode).toBe(403)
    expect(text).toContain('DLP_BLOCKED')
    expect(text).toContain('gave no decision')
    expect(text).not.toContain('jane')
    const metrics = await proxy.metricsText()
    expect(metricSum(metrics, 'igw_dlp_exports_total', 'outcome="denied"')).toBe(1)
    expect(metricSum(metrics, 'igw_filter_errors_total', '')).toBe(0)
  })
})
