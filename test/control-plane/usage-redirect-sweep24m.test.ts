// A usage report answered with a redirect (an ingress that sends http:// on to https://, a moved
// URL) was taken as delivered: any status under 400 dropped it from the pending list, so every
// report was lost without a word while the statements stayed at zero. A redirect is not followed
// and counts nothing: the report is kept, retried and logged; once the URL answers, it is counted.
// Real control plane and proxy; in front of it an HTTP server that first redirects, then passes on.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('a usage report answered with a redirect', () => {
  let cp: TestControlPlane
  let backend: RawBackend
  let front: RawBackend
  let proxy: TestProxy
  let client: ControlPlaneClient
  let stateDir: string
  let redirecting = true
  const logged: { msg: string; obj: Record<string, unknown> }[] = []

  beforeAll(async () => {
    cp = await startTestControlPlane()
    backend = await startRawBackend((_req, res) => res.end('ok'))
    front = await startRawBackend((req, res) => {
      if (redirecting) {
        res.writeHead(308, { location: `https://igw-cp.example${req.url}` }).end()
        return
      }
      // Passed on as it came (method, path, headers, body) to the real control plane.
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        void request(`${cp.url}${req.url}`, { method: req.method as 'POST', headers: { authorization: req.headers.authorization!, 'content-type': req.headers['content-type']! }, body: Buffer.concat(chunks) }).then(async (r) => {
          res.writeHead(r.statusCode, { 'content-type': String(r.headers['content-type']) }).end(Buffer.from(await r.body.arrayBuffer()))
        })
      })
    })
    proxy = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'rest', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }] }] as never })
    stateDir = mkdtempSync(join(tmpdir(), 'igw-usage-redirect-'))
    client = new ControlPlaneClient({
      url: front.url,
      token: await cp.token({ sub: 'proxy-redir', roles: ['proxy'] }),
      stateDir,
      proxyId: 'redir',
      toConfig: () => proxy.config(),
      usageIntervalMs: 3_600_000,
      log: (_level, obj, msg) => void logged.push({ msg, obj }),
    })
    client.attach(proxy)
  })
  afterAll(async () => {
    await client?.close()
    await proxy?.close()
    await front?.close()
    await backend?.close()
    await cp?.close()
    if (stateDir) rmSync(stateDir, { recursive: true, force: true })
  })

  const requests = async () => ((await (await cp.api('/v1/tenants/acme/statement?from=2000-01-01&to=2099-12-31')).json()) as { totals: { requests: number } }).totals.requests

  it('is kept and said, and counted once the URL answers', async () => {
    for (let i = 0; i < 3; i++) await (await request(`${proxy.url}/x`, { headers: { 'x-tenant-id': 'acme' } })).body.text()
    await client.reportUsage()
    expect(logged.find((l) => /redirect/.test(l.msg))?.obj).toMatchObject({ status: 308, location: 'https://igw-cp.example/v1/usage', pending: 1 })
    expect(await requests()).toBe(0)
    redirecting = false
    await client.reportUsage()
    expect(await requests()).toBe(3)
  })
})
