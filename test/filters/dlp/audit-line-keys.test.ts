// The DLP audit line ("dlp export") named the tenant twice — the request logger's binding and the
// line's own field — so its JSON held a duplicate key (strict readers refuse it, others keep
// either). Once now, and null for an anonymous export. Real proxy, raw backend, undici.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

describe('the dlp export audit line', () => {
  let raw: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.end('{"email":"ann@example.com"}\n')
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-audit-keys-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      dlp: { keyring: { file: keyring }, policy: { enabled: false } },
      routes: [
        { name: 't', match: { pathPrefix: '/t/' }, upstream: raw.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/t/export/' }] } }] },
        { name: 'anon', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/export/' }] } }] },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const exportAs = async (id: string, tenant?: string) => {
    const res = await request(`${proxy.url}${tenant ? '/t' : ''}/export/a.ndjson`, { headers: { 'x-request-id': id, ...(tenant ? { 'x-tenant-id': tenant } : {}) } })
    expect(await res.body.text()).not.toContain('ann@example.com')
    await expect.poll(() => proxy.logs.raw.filter((l) => l.includes('"msg":"dlp export"') && l.includes(`"reqId":"${id}"`)).length, { timeout: 5_000 }).toBe(1)
    return proxy.logs.raw.find((l) => l.includes('"msg":"dlp export"') && l.includes(`"reqId":"${id}"`))!
  }

  it('names the tenant once, and null for an anonymous export', async () => {
    const line = await exportAs('audit-keys-acme', 'acme')
    expect(line.match(/"tenant":/g)).toHaveLength(1)
    expect(JSON.parse(line)).toMatchObject({ audit: 'dlp.export', tenant: 'acme' })
    const anon = await exportAs('audit-keys-anon')
    expect(anon.match(/"tenant":/g)).toHaveLength(1)
    expect(JSON.parse(anon)).toMatchObject({ audit: 'dlp.export', tenant: null })
  })
})
