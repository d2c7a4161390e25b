import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { redactConfig } from '../../config/redact.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { spawnIgw, startTestProxy, writeTempConfig, type TestProxy } from '../helpers/proxy.ts'

describe('admin port', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startDemoBackend()
    proxy = await startTestProxy({
      redis: { url: 'redis://igw:hunter2@127.0.0.1:1' },
      routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: 's'.repeat(40) }, defaultTenant: 'a' }] }],
      tenants: { a: {} },
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('/healthz and /readyz report workers and upstreams', async () => {
    const h = await request(`${proxy.adminUrl}/healthz`)
    expect(h.statusCode).toBe(200)
    expect(await h.body.json()).toMatchObject({ status: 'ok', workers: 1 })
    let ready = await request(`${proxy.adminUrl}/readyz`)
    for (let i = 0; i < 40 && ready.statusCode !== 200; i++) {
      await ready.body.dump()
      await new Promise((r) => setTimeout(r, 50))
      ready = await request(`${proxy.adminUrl}/readyz`)
    }
    expect(ready.statusCode).toBe(200)
    expect(await ready.body.json()).toMatchObject({ ready: true, version: 1, workers: { listening: 1, wanted: 1 }, upstreams: [{ url: backend.url, healthy: true }] })
  })

  it('/config shows the effective config with secrets and URL credentials redacted', async () => {
    const res = await request(`${proxy.adminUrl}/config`)
    const text = await res.body.text()
    expect(text).not.toContain('hunter2')
    expect(text).not.toContain('s'.repeat(40))
    const body = JSON.parse(text) as { version: number; config: { redis: { url: string }; routes: { filters: { jwt?: { secret: string } }[] }[] } }
    expect(body.version).toBe(1)
    expect(body.config.redis.url).toBe('redis://[redacted]@127.0.0.1:1')
    expect(body.config.routes[0]!.filters[0]!.jwt!.secret).toBe('[redacted]')
  })

  it('redaction covers nested keys by name', () => {
    expect(redactConfig({ a: { password: 'p', apiKey: 'k', privateKeyFile: '/x', nested: [{ token: 't' }], ok: 'v' } })).toEqual({
      a: { password: '[redacted]', apiKey: '[redacted]', privateKeyFile: '[redacted]', nested: [{ token: '[redacted]' }], ok: 'v' },
    })
  })

  it('fields naming headers (cache privateHeaders) are shown: header names are not secrets; a secret header value still is not', () => {
    expect(redactConfig({ cache: { privateHeaders: ['authorization', 'cookie'] }, webhook: { headers: { authorization: 'Bearer x' }, tokenHeader: 'x-token' } })).toEqual({
      cache: { privateHeaders: ['authorization', 'cookie'] },
      webhook: { headers: { authorization: '[redacted]' }, tokenHeader: 'x-token' },
    })
  })

  it('unknown admin paths are 404 JSON', async () => {
    const res = await request(`${proxy.adminUrl}/nope`)
    expect(res.statusCode).toBe(404)
    expect(await res.body.json()).toEqual({ error: 'no admin endpoint /nope' })
  })

  it('`igw config validate` prints every problem with its path and exits 78', async () => {
    const bad = writeTempConfig({ routes: [{ name: 'a', upstream: 'htp:/x', maxBodyBytes: 'lots' }] })
    const { spawnSync } = await import('node:child_process')
    const { IGW_BIN } = await import('../helpers/proxy.ts')
    const r = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', bad], { encoding: 'utf8' })
    expect(r.status).toBe(78)
    expect(r.stderr).toContain('routes[0].upstream: expected URL, got "htp:/x"')
    expect(r.stderr).toMatch(/routes\[0\]\.maxBodyBytes: expected a byte size/)
    const good = writeTempConfig({ routes: [{ name: 'a', upstream: backend.url }] })
    const ok = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', good], { encoding: 'utf8' })
    expect(ok.status).toBe(0)
    expect(ok.stdout).toContain('valid')
  })

  it('`igw demo` serves the sample backend through the gateway', async () => {
    const demo = await spawnIgw(['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { IGW_DEMO_BACKEND: '127.0.0.1:0' })
    try {
      const res = await request(`${demo.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
      expect(await res.body.json()).toEqual({ data: { hello: 'Hello, world!' } })
      const nd = await request(`${demo.url}/export/entities.ndjson?count=3`)
      expect((await nd.body.text()).trim().split('\n')).toHaveLength(3)
    } finally {
      expect(await demo.stop()).toBe(0)
    }
  })
})
