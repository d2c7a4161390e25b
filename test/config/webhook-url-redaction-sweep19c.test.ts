// A webhook's URL may be its own credential: Slack, Discord and Teams incoming webhooks carry the
// secret in the path (https://hooks.slack.com/services/T…/B…/<secret>), which the credential and
// secret-query rules never saw. The proxy's /config and a viewer's GET /v1/alert-sinks (and the
// audit diff a viewer reads) showed it whole: anyone who may read the config could post to the
// channel. Shown as its origin now; a writer still reads it whole; a config error describes it.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../config/load.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'XyZsecretTokenPart0123456789'
const HOOK = `https://hooks.slack.com/services/T0001/B0002/${SECRET}`

describe('webhook URLs are redacted where config is shown', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  let cp: TestControlPlane
  beforeAll(async () => {
    demo = await startDemoBackend()
    proxy = await startTestProxy({ quotas: { events: { webhook: { url: HOOK } } }, routes: [{ name: 'g', upstream: demo.url }] } as never)
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
    await cp?.close()
  })

  it('the proxy\'s admin /config shows the origin only', async () => {
    const r = await request(`${proxy.adminUrl}/config`)
    const text = await r.body.text()
    expect(text).not.toContain(SECRET)
    const cfg = (JSON.parse(text) as { config: { quotas: { events: { webhook: { url: string } } } } }).config
    expect(cfg.quotas.events.webhook.url).toBe('https://hooks.slack.com/[redacted]')
  })

  it('a viewer of /v1/alert-sinks and of its audit diff does not get it; a writer does', async () => {
    expect((await cp.api('/v1/alert-sinks', { method: 'PUT', body: JSON.stringify({ webhook: { url: HOOK } }) })).status).toBe(200)
    expect((await cp.api('/v1/alert-sinks', { method: 'PUT', body: JSON.stringify({ webhook: { url: `${HOOK}x` } }) })).status).toBe(200)
    const viewer = await cp.token({ sub: 'vera', roles: ['viewer'] })
    for (const path of ['/v1/alert-sinks', '/v1/config', '/v1/audit?resource=alert-sinks']) {
      const text = await (await cp.api(path, { token: viewer })).text()
      expect(text, path).not.toContain(SECRET)
    }
    const seen = (await (await cp.api('/v1/alert-sinks', { token: viewer })).json()) as { value?: { webhook: { url: string } }; webhook?: { url: string } }
    expect(JSON.stringify(seen)).toContain('https://hooks.slack.com/[redacted]')
    expect(await (await cp.api('/v1/alert-sinks')).text()).toContain(`${SECRET}x`)
  })

  it('a config error about it describes it instead of quoting it', () => {
    let err: unknown
    try {
      validateConfig({ quotas: { events: { webhook: { url: `ftp://hooks.slack.com/services/T0001/B0002/${SECRET}` } } }, routes: [{ name: 'g', upstream: 'http://127.0.0.1:1' }] })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toContain('quotas.events.webhook.url')
    expect((err as Error).message).not.toContain(SECRET)
  })
})
