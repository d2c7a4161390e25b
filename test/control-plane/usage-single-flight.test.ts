// The proxy's usage reporting runs one loop at a time. Two overlapping runs (the interval's tick
// while a slow POST is still in flight, or close() meanwhile) each walked the same pending list:
// one report was posted twice, and a shift() could drop one that neither had sent. Real control
// plane, real proxy: the POSTs it receives and the statement it keeps.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('usage reports, one run at a time', () => {
  let cp: TestControlPlane
  let backend: RawBackend
  let proxy: TestProxy
  let client: ControlPlaneClient
  beforeAll(async () => {
    cp = await startTestControlPlane()
    backend = await startRawBackend((_req, res) => res.end('ok'))
    proxy = await startTestProxy({ tenants: { acme: {} }, routes: [{ name: 'rest', upstream: backend.url, type: 'http', filters: [{ name: 'tenant' }] as never }] })
    client = new ControlPlaneClient({
      url: cp.url,
      token: await cp.token({ sub: 'proxy-sf', roles: ['proxy'] }),
      stateDir: mkdtempSync(join(tmpdir(), 'igw-usage-sf-')),
      proxyId: 'sf',
      toConfig: () => proxy.config(),
      usageIntervalMs: 3_600_000,
      log: () => undefined,
    })
    client.attach(proxy)
  })
  afterAll(async () => {
    await client?.close()
    await proxy?.close()
    await backend?.close()
    await cp?.close()
  })

  const send = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const r = await request(`${proxy.url}/x`, { headers: { 'x-tenant-id': 'acme' } })
      await r.body.text()
    }
  }
  const posts = async () => metricSample(await (await fetch(`${cp.metricsUrl}/metrics`)).text(), 'igw_control_plane_requests_total', { route: '/v1/usage', method: 'POST', status: '200' }) ?? 0

  it('two overlapping runs post one report once; a flush after them posts what came later; the statement counts each request once', async () => {
    await send(3)
    await Promise.all([client.reportUsage(), client.reportUsage()])
    expect(await posts()).toBe(1)
    await send(2)
    await client.flushUsage()
    expect(await posts()).toBe(2)
    const st = (await (await cp.api('/v1/tenants/acme/statement?from=2000-01-01&to=2099-12-31')).json()) as { totals: { requests: number } }
    expect(st.totals.requests).toBe(5)
  })
})
