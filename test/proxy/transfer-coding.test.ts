// A transfer coding other than chunked (`Transfer-Encoding: gzip, chunked`) is hop-by-hop: the
// proxy must undo it or refuse the response. undici undoes only chunked, and Transfer-Encoding is
// stripped toward the client, so the client got gzip bytes with nothing saying so (a corrupt
// body passed as a good one). Now: 502 UPSTREAM_UNAVAILABLE, logged and counted.
import { createServer, type Server } from 'node:net'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('upstream transfer codings', () => {
  let upstream: Server
  let proxy: TestProxy
  beforeAll(async () => {
    upstream = createServer((s) => {
      s.on('error', () => undefined)
      s.once('data', (d: Buffer) => {
        const path = d.toString('latin1').split(' ')[1]
        const payload = path === '/gzip' ? gzipSync('{"data":{"ok":true}}') : Buffer.from('{"data":{"ok":true}}')
        const te = path === '/gzip' ? 'gzip, chunked' : path === '/upper' ? 'Chunked' : 'chunked'
        s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: ${te}\r\nconnection: close\r\n\r\n${payload.length.toString(16)}\r\n`, 'latin1'), payload, Buffer.from('\r\n0\r\n\r\n')]))
      })
    })
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
    const port = (upstream.address() as { port: number }).port
    proxy = await startTestProxy({ routes: [{ name: 'rest', upstream: `http://127.0.0.1:${port}`, type: 'http' }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await new Promise((r) => upstream.close(r))
  })

  it('gzip, chunked → 502 naming the coding; chunked in any case passes', async () => {
    const bad = await request(`${proxy.url}/gzip`)
    expect(bad.statusCode).toBe(502)
    const err = ((await bad.body.json()) as { errors: { message: string; extensions: { code: string } }[] }).errors[0]!
    expect(err.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(err.message).toContain('gzip')
    expect(metricSum(await proxy.metricsText(), 'igw_proxy_errors_total', 'code="UPSTREAM_UNAVAILABLE"')).toBe(1)
    for (const path of ['/plain', '/upper']) {
      const ok = await request(`${proxy.url}${path}`)
      expect([path, ok.statusCode, await ok.body.text()]).toEqual([path, 200, '{"data":{"ok":true}}'])
    }
  })
})
