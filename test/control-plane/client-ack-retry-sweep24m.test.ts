// An ACK/NACK is a POST of its own, beside the config stream. One the control plane did not take
// (a 503 while its database was busy, a token file rotated to a token without the proxy role for a
// moment) was logged and thrown away: the stream stayed up, so nothing else told the control plane
// — GET /v1/proxies showed the proxy on its previous version (or without its NACK) until the
// stream happened to reconnect, hours later, and a rollout waiting for ACKs waited with it. Now the
// latest unsent ACK and NACK are retried (in order, a newer answer replacing an older one) until
// the control plane takes them. Real control plane, real proxy; the refusal is a real 403.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('ACK/NACK the control plane did not take', () => {
  let cp: TestControlPlane
  let backend: RawBackend
  let proxy: TestProxy
  let client: ControlPlaneClient
  let stateDir: string
  let token: string
  let proxyToken: string
  let viewerToken: string
  const logged: { msg: string; obj: Record<string, unknown> }[] = []
  /** The next document is refused here (toConfig throws): a NACK. */
  let refuseNext = false

  beforeAll(async () => {
    cp = await startTestControlPlane()
    backend = await startRawBackend((_req, res) => res.end('ok'))
    proxy = await startTestProxy({ routes: [{ name: 'rest', upstream: backend.url, type: 'http' }] as never })
    proxyToken = await cp.token({ sub: 'proxy-ackr', roles: ['proxy'] })
    viewerToken = await cp.token({ sub: 'proxy-ackr', roles: ['viewer'] })
    token = proxyToken
    stateDir = mkdtempSync(join(tmpdir(), 'igw-ack-retry-'))
    client = new ControlPlaneClient({
      url: cp.url,
      token: () => token,
      stateDir,
      proxyId: 'ackr',
      publicKeyPem: cp.store.key.publicKeyPem,
      toConfig: () => {
        if (refuseNext) throw new Error('refused here on purpose')
        return proxy.config()
      },
      usageIntervalMs: 3_600_000,
      log: (_level, obj, msg) => void logged.push({ msg, obj }),
    })
    const boot = await client.bootstrap()
    expect(boot?.version).toBe(1)
    client.attach(proxy)
    await client.ackBoot()
  })
  afterAll(async () => {
    await client?.close()
    await proxy?.close()
    await backend?.close()
    await cp?.close()
    if (stateDir) rmSync(stateDir, { recursive: true, force: true })
  })

  const row = async () => ((await (await cp.api('/v1/proxies')).json()) as { items: { id: string; appliedVersion: number | null; lastNack: { version: number } | null }[] }).items.find((i) => i.id === 'ackr')
  const commit = async (name: string) => ((await (await cp.api(`/v1/tenants/${name}`, { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).json()) as { version: number }).version
  const refusedAnswer = (version: number, answer: string) => logged.some((l) => l.msg.startsWith('could not send ACK/NACK') && l.obj.version === version && l.obj.answer === answer)
  /** ACK/NACK posts the control plane refused (403); the proxy logs them once a minute only. */
  const refusedPosts = async () => metricSample(await (await fetch(`${cp.metricsUrl}/metrics`)).text(), 'igw_control_plane_requests_total', { route: '/v1/proxies/{id}/ack', method: 'POST', status: '403' }) ?? 0

  it('an ACK refused once reaches the control plane when it takes ACKs again, on the same stream', async () => {
    await expect.poll(async () => (await row())?.appliedVersion, { timeout: 5_000 }).toBe(1)
    token = viewerToken
    const v = await commit('acked')
    await expect.poll(() => refusedAnswer(v, 'ACK'), { timeout: 5_000 }).toBe(true)
    expect(client.version).toBe(v)
    expect((await row())?.appliedVersion).toBe(1)
    token = proxyToken
    await expect.poll(async () => (await row())?.appliedVersion, { timeout: 8_000, interval: 100 }).toBe(v)
  })

  it('a lost NACK is retried; an ACK of a later version replaces it (no stale NACK lands after it)', async () => {
    token = viewerToken
    refuseNext = true
    let before = await refusedPosts()
    const nacked = await commit('nacked')
    await expect.poll(refusedPosts, { timeout: 5_000 }).toBeGreaterThan(before)
    token = proxyToken
    await expect.poll(async () => (await row())?.lastNack?.version, { timeout: 8_000, interval: 100 }).toBe(nacked)
    // Lost again, and then the next version is applied and ACKed: the NACK of the older one is
    // resolved by that ACK, and must not be sent after it.
    token = viewerToken
    before = await refusedPosts()
    await commit('nacked2')
    await expect.poll(refusedPosts, { timeout: 5_000 }).toBeGreaterThan(before)
    refuseNext = false
    token = proxyToken
    const next = await commit('fixed')
    await expect.poll(async () => (await row())?.appliedVersion, { timeout: 8_000, interval: 100 }).toBe(next)
    expect((await row())?.lastNack).toBe(null)
  })
})
