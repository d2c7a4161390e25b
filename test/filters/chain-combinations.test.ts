// Filters built separately, run together: every order an operator may reasonably write must
// answer (never a silently dropped connection), and the cache must store what the client got.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type Body = { data?: { entities?: { id: string; email: string }[]; updateEntity?: { id: string; name: string } }; errors?: unknown[] }

describe('cache and dlp in one chain, both orders', () => {
  let backend: DemoBackend
  let proxy: TestProxy

  beforeAll(async () => {
    backend = await startDemoBackend()
    const dlp = { name: 'dlp' as const, preset: 'tok', exports: { graphql: { responsePaths: ['entities'] } } }
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-chain-')), 'keyring.json') }, presets: { tok: { email: 'tokenize' } }, policy: { allowedPresets: ['tok', 'tokenize_strict'] } },
      routes: [
        { name: 'cache-then-dlp', match: { pathPrefix: '/a' }, upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache' }, dlp] },
        { name: 'dlp-then-cache', match: { pathPrefix: '/b' }, upstream: backend.url, filters: [{ name: 'tenant' }, dlp, { name: 'cache' }] },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const post = async (prefix: string, query: string) => {
    const res = await request(`${proxy.url}${prefix}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query }) })
    return { status: res.statusCode, headers: res.headers, body: (await res.body.json()) as Body }
  }

  it.each(['/a', '/b'])('%s: a DLP-transformed query answers, is cached as transformed, and a mutation invalidates it', async (prefix) => {
    const q = '{ entities(first: 2) { id email } }'
    const first = await post(prefix, q)
    expect(first.status).toBe(200)
    expect(first.headers['x-cache']).toBe('MISS')
    const emails = first.body.data!.entities!.map((e) => e.email)
    expect(emails.every((e) => e.startsWith('tok_email_'))).toBe(true)
    const second = await post(prefix, q)
    expect(second.headers['x-cache']).toBe('HIT')
    expect(second.body).toEqual(first.body) // a hit is exactly what the client got the first time
    expect(JSON.stringify(second.body)).not.toContain('@example.com') // never raw PII from the cache
    const m = await post(prefix, 'mutation { updateEntity(id: "1", name: "Renamed") { id name } }')
    expect(m.body.data?.updateEntity).toMatchObject({ id: '1', name: 'Renamed' })
    const third = await post(prefix, q)
    expect(third.headers['x-cache']).toBe('MISS')
  })

  it("DLP actions reach the tenant's usage report (control-plane statements)", async () => {
    await proxy.collectUsage() // start from an empty window
    await post('/a', '{ entities(first: 3) { id email } }')
    const usage = await proxy.collectUsage()
    expect(usage.acme?.dlpActions['email:tokenize']).toBeGreaterThanOrEqual(3)
  })
})
