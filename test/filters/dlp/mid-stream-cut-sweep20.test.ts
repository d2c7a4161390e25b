// A DLP block after the head was out (a CSV export with an SSN past the lookahead) cuts the
// response on purpose. It was recorded as the filter failing: igw_filter_errors_total{filter=
// "dlp"} + 1, an error line with a stack ("filter body stream failed"), and the access line's
// code INTERNAL_SERVER_ERROR, so a page fired for a DLP doing its job and tenant usage showed no
// DLP rejection. Now: code DLP_BLOCKED, an info line, no filter error.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

describe('a DLP block mid-stream is a deliberate cut, not a filter failure', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/csv' })
      res.write('id,email\n')
      // Well past the lookahead, so the head is out before the SSN arrives.
      for (let i = 1; i <= 4000; i++) res.write(`${i},user${i}@example.com\n`)
      res.end('4001,ssn 123-45-6789\n')
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-cut-')), 'keyring.json')
    proxy = await startTestProxy({
      dlp: { keyring: { file: keyring }, policy: { allowedPresets: ['tokenize_strict'] } },
      routes: [{ name: 'exp', upstream: raw.url, type: 'http', filters: [{ name: 'request-id' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('the response is cut; the access line says DLP_BLOCKED; no filter error, no error log', async () => {
    const res = await request(`${proxy.url}/export.csv`, { headers: { 'x-request-id': 'cut-1' } })
    expect(res.statusCode).toBe(200)
    // Cut: the body does not end cleanly (no partial file passes for a complete one).
    await expect(res.body.text()).rejects.toThrow()
    await waitUntil(() => proxy.logs.lines.some((l) => l.msg === 'access' && l.reqId === 'cut-1'))
    const access = proxy.logs.lines.find((l) => l.msg === 'access' && l.reqId === 'cut-1')!
    expect(access.code).toBe('DLP_BLOCKED')
    expect(access.filter).toBe('dlp')
    expect(proxy.logs.lines.filter((l) => l.msg === 'filter body stream failed; response cut')).toEqual([])
    expect(proxy.logs.lines.some((l) => l.msg === 'response cut by filter' && l.code === 'DLP_BLOCKED')).toBe(true)
    expect(metricSum(await proxy.metricsText(), 'igw_filter_errors_total', 'filter="dlp"')).toBe(0)
  })
})
