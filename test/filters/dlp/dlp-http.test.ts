// DLP through the real proxy (worker threads), the real demo backend and raw backends.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { addKey, LocalKeyring, promoteKey } from '../../../filters/dlp/keyring.ts'
import { detokenize } from '../../../filters/dlp/tokenizer.ts'
import { sampleEntity } from '../../../proxy/demo-backend.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const CLEAN = (i: number) => `{"id":${i},"email":"user${i}@example.com","note":"order ${100000 + i} shipped"}\n`

describe('dlp filter over HTTP', () => {
  let demo: DemoBackend
  let raw: RawBackend
  let proxy: TestProxy
  let keyring: string

  beforeAll(async () => {
    demo = await startDemoBackend()
    raw = await startRawBackend((req, res) => {
      const url = new URL(req.url!, 'http://x')
      const n = Number(url.searchParams.get('n') ?? '3000')
      if (url.pathname === '/raw/late-ssn.ndjson' || url.pathname === '/raw/late-ssn.csv') {
        const csv = url.pathname.endsWith('.csv')
        res.writeHead(200, { 'content-type': csv ? 'text/csv' : 'application/x-ndjson' })
        if (csv) res.write('id,email,note\n')
        for (let i = 1; i <= n; i++) res.write(csv ? `${i},user${i}@example.com,order ${100000 + i}\n` : CLEAN(i))
        res.end(csv ? `${n + 1},x@example.com,ssn 123-45-6789\n` : `{"id":${n + 1},"ssn":"123-45-6789"}\n`)
        return
      }
      if (url.pathname === '/raw/gzip.ndjson') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' })
        res.end(gzipSync(CLEAN(1) + CLEAN(2)))
        return
      }
      if (url.pathname === '/raw/blob.zip') {
        res.writeHead(200, { 'content-type': 'application/zip' })
        res.end('PK\u0003\u0004 jane@example.com')
        return
      }
      res.writeHead(404)
      res.end()
    })
    keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-http-')), 'keys', 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {}, globex: {}, initech: {} },
      dlp: {
        keyring: { file: keyring },
        presets: { tok_all: { email: 'tokenize', phone_e164: 'hash', ssn_us: 'tokenize' }, csv_safe: { email: 'mask', phone_e164: 'mask', ssn_us: 'redact' } },
        tenants: { globex: { preset: 'tokenize_strict' }, initech: { preset: 'mask_basic' } },
        policy: { allowedPresets: ['tokenize_strict', 'tok_all', 'csv_safe'] },
      },
      routes: [
        {
          name: 'raw',
          match: { pathPrefix: '/raw/' },
          upstream: raw.url,
          type: 'http',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/raw/' }] } }],
        },
        {
          name: 'api',
          upstream: demo.url,
          type: 'graphql',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'dlp', preset: 'tok_all', exports: { paths: [{ prefix: '/export/' }], graphql: { responsePaths: ['entities'] } } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
    await raw?.close()
  })

  const get = (path: string, tenant = 'acme') => request(`${proxy.url}${path}`, { headers: { 'x-tenant-id': tenant } })
  const gql = (query: string, tenant = 'acme') => request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query }) })

  it('NDJSON export: values become reversible deterministic tokens; the counts arrive as a trailer', async () => {
    const r = await get('/export/entities.ndjson?count=2000')
    expect(r.statusCode).toBe(200)
    expect(r.headers['transfer-encoding']).toBe('chunked')
    expect(r.headers['content-length']).toBeUndefined()
    expect(r.headers.trailer).toBe('x-dlp') // announced in the head
    const lines = (await r.body.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>)
    expect(lines).toHaveLength(2000)
    expect(r.trailers['x-dlp']).toBe('preset=tok_all; masked=0; tokenized=4000; hashed=2000; redacted=0; rules=igw-dlp-core@1.2.12')
    const ring = await new LocalKeyring(keyring, { create: false }).load()
    const e = sampleEntity(7)
    const rec = lines[6]!
    expect(rec.name).toBe(e.name)
    expect(rec.note).toBe('order 100007 shipped')
    expect(rec.email).toMatch(/^tok_email_k1_/)
    expect(detokenize(rec.email!, ring)).toEqual({ type: 'email', keyId: 'k1', value: e.email })
    expect(detokenize(rec.ssn!, ring).value).toBe(e.ssn)
    expect(rec.phone).toMatch(/^hsh_phone_e164_k1_/)
    // deterministic: the same value gives the same token in another export (joins work)
    const again = (await (await get('/export/entities.ndjson?count=7')).body.text()).trim().split('\n')
    expect((JSON.parse(again[6]!) as Record<string, string>).email).toBe(rec.email)
  })

  it('CSV export with a custom preset: headers name the columns; the note column (order numbers) is left alone', async () => {
    const r = await get('/export/entities.csv?count=3', 'acme')
    await r.body.dump()
    const direct = await request(`${demo.url}/export/entities.csv?count=3`)
    const plain = await direct.body.text()
    expect(plain).toContain(sampleEntity(1).email)
    // the tenant-less route preset is tok_all; check a tenant with its own preset
    const masked = await request(`${proxy.url}/export/entities.csv?count=3`, { headers: { 'x-tenant-id': 'acme' } })
    const text = await masked.body.text()
    expect(text.split('\n')[0]).toBe('id,name,email,phone,ssn,note')
    expect(text).not.toContain(sampleEntity(1).email)
    expect(text).toContain('order 100001 shipped')
  })

  it('GraphQL: an operation selecting a listed response path is an export; only that subtree changes; x-dlp header', async () => {
    const before = demo.stats.byField.get('entities') ?? 0
    const r = await gql('{ entities(first: 3) { id email phone ssn } hello }')
    expect(r.statusCode).toBe(200)
    expect(r.headers['x-dlp']).toBe('preset=tok_all; masked=0; tokenized=6; hashed=3; redacted=0; rules=igw-dlp-core@1.2.12')
    const body = (await r.body.json()) as { data: { entities: Record<string, string>[]; hello: string } }
    expect(body.data.hello).toBe('Hello, world!')
    expect(body.data.entities[0]!.email).toMatch(/^tok_email_k1_/)
    expect(demo.stats.byField.get('entities')).toBe(before + 1)
    const other = await gql('{ hello entity(id: "1") { email } }')
    expect(other.headers['x-dlp']).toBeUndefined()
    expect(JSON.stringify(await other.body.json())).toContain(sampleEntity(1).email) // not an export: untouched
  })

  it('block before the head: tokenize_strict refuses an export with SSNs (403 DLP_BLOCKED, type and count, no record)', async () => {
    const r = await get('/export/entities.ndjson?count=50', 'globex')
    expect(r.statusCode).toBe(403)
    const text = await r.body.text()
    const body = JSON.parse(text) as { errors: { message: string; extensions: Record<string, unknown> }[] }
    expect(body.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', type: 'ssn_us', preset: 'tokenize_strict', rule: 'ssn_us.field@1.2.12' })
    expect(body.errors[0]!.extensions.count as number).toBeGreaterThanOrEqual(1)
    expect(body.errors[0]!.message).toMatch(/ssn_us/)
    expect(text).not.toContain('example.com')
    expect(r.headers['x-request-id']).toBeDefined()
    const g = await gql('{ entities(first: 5) { id ssn } }', 'globex')
    expect(g.statusCode).toBe(403)
    expect(((await g.body.json()) as { errors: { extensions: { count: number } }[] }).errors[0]!.extensions.count).toBe(5)
  })

  it('policy denial happens before the upstream is called', async () => {
    const before = demo.stats.byField.get('entities') ?? 0
    const r = await gql('{ entities(first: 3) { id email } }', 'initech')
    expect(r.statusCode).toBe(403)
    const body = (await r.body.json()) as { errors: { message: string; extensions: Record<string, unknown> }[] }
    expect(body.errors[0]!.message).toBe('preset "mask_basic" is not allowed for exports (allowed: csv_safe, tok_all, tokenize_strict)')
    expect(body.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', preset: 'mask_basic', policy: 'intelgraph/dlp/decision' })
    expect(demo.stats.byField.get('entities') ?? 0).toBe(before)
  })

  it('block mid-stream (NDJSON): records before it pass, then an error record and the trailer; the response ends cleanly', async () => {
    const r = await get('/raw/late-ssn.ndjson?n=3000')
    expect(r.statusCode).toBe(200)
    const lines = (await r.body.text()).trim().split('\n')
    expect(lines).toHaveLength(3001)
    expect(JSON.parse(lines[2999]!)).toMatchObject({ id: 3000 })
    const last = JSON.parse(lines[3000]!) as { errors: { message: string; extensions: Record<string, unknown> }[] }
    expect(last.errors[0]!.extensions).toMatchObject({ code: 'DLP_BLOCKED', type: 'ssn_us', count: 1, records: 3000 })
    expect(r.trailers['x-dlp']).toMatch(/^preset=tokenize_strict; masked=0; tokenized=3000; .*; blocked=ssn_us:1$/)
    expect(lines.join('\n')).not.toContain('123-45-6789')
  })

  it('block mid-stream (CSV): the response is cut, so a partial file cannot pass for a complete one', async () => {
    const r = await get('/raw/late-ssn.csv?n=3000')
    expect(r.statusCode).toBe(200)
    let text = ''
    await expect(
      (async () => {
        for await (const c of r.body) text += (c as Buffer).toString()
      })(),
    ).rejects.toThrow()
    expect(text).not.toContain('123-45-6789')
  })

  it('gzip from the upstream is decoded and inspected; formats DLP cannot read are refused', async () => {
    const g = await get('/raw/gzip.ndjson')
    expect(g.statusCode).toBe(200)
    expect(g.headers['content-encoding']).toBeUndefined()
    const text = await g.body.text()
    expect(text).toMatch(/^\{"id":1,"email":"tok_email_k1_/)
    const z = await get('/raw/blob.zip')
    expect(z.statusCode).toBe(403)
    expect(await z.body.text()).toContain('application/zip')
  })

  it('counts go to igw_dlp_actions_total{type,action} and one audit line per export, with no raw value in any log line', async () => {
    const metrics = await proxy.metricsText()
    expect(metricSum(metrics, 'igw_dlp_actions_total', 'type="email",action="tokenize"')).toBeGreaterThanOrEqual(4000)
    expect(metricSum(metrics, 'igw_dlp_actions_total', 'type="ssn_us",action="block"')).toBeGreaterThanOrEqual(2)
    expect(metricSum(metrics, 'igw_dlp_exports_total', 'outcome="denied"')).toBeGreaterThanOrEqual(1)
    const audits = proxy.logs.find('dlp export')
    expect(audits.length).toBeGreaterThanOrEqual(8)
    const blocked = audits.find((a) => a.outcome === 'blocked' && a.tenant === 'globex')!
    expect(blocked).toMatchObject({ audit: 'dlp.export', preset: 'tokenize_strict', policy: { allow: true, reason: 'allowed' } })
    expect(audits.find((a) => a.outcome === 'denied')).toMatchObject({ tenant: 'initech', preset: 'mask_basic', policy: { allow: false } })
    // every value the exports carried, in every form it could leak in
    const values: string[] = ['123-45-6789', '123456789']
    for (let i = 1; i <= 2000; i++) {
      const e = sampleEntity(i)
      values.push(e.email, e.phone, e.ssn)
    }
    for (let i = 1; i <= 3000; i += 97) values.push(`user${i}@example.com`)
    const all = proxy.logs.raw.join('\n')
    const leaked = values.filter((v) => all.includes(v))
    expect(leaked).toEqual([])
  })

  it('a promoted key is picked up without a reload; tokens made with the old key still reverse', async () => {
    const first = (await (await get('/export/entities.ndjson?count=1')).body.text()).trim()
    const oldToken = (JSON.parse(first) as { email: string }).email
    promoteKey(keyring, addKey(keyring))
    // Requests trigger the background check (every 2 s at most): export until the new key shows.
    let rec = { email: '' }
    await expect
      .poll(
        async () => {
          rec = JSON.parse((await (await get('/export/entities.ndjson?count=1')).body.text()).trim()) as { email: string }
          return rec.email
        },
        { timeout: 10_000, interval: 200 },
      )
      .toMatch(/^tok_email_k2_/)
    const ring = await new LocalKeyring(keyring, { create: false }).load()
    expect(detokenize(oldToken, ring).value).toBe(sampleEntity(1).email)
    expect(detokenize(rec.email, ring).value).toBe(sampleEntity(1).email)
  })
})

describe('config/examples/dlp.yaml', () => {
  it('loads, creates its keyring on first use, and does what its comments say', async () => {
    const { loadConfigFile } = await import('../../../config/load.ts')
    const { ROOT } = await import('../../helpers/proxy.ts')
    const demo = await startDemoBackend()
    const keyringPath = join(mkdtempSync(join(tmpdir(), 'igw-dlp-example-')), 'data', 'dlp-keyring.json')
    const { config } = loadConfigFile(join(ROOT, 'config/examples/dlp.yaml'), { ...process.env, APP_URL: demo.url, DLP_KEYRING: keyringPath })
    const proxy = await startTestProxy({ ...config, listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' } } as never)
    try {
      const get = (tenant: string, path: string) => request(`${proxy.url}${path}`, { headers: { 'x-tenant-id': tenant } })
      const acme = await get('acme', '/export/entities.ndjson?count=3')
      expect(acme.statusCode).toBe(200)
      expect(await acme.body.text()).toMatch(/"email":"tok_email_k1_/)
      expect((await new LocalKeyring(keyringPath, { create: false }).load()).active).toBe('k1')
      const globex = await get('globex', '/export/entities.ndjson?count=3')
      expect(globex.statusCode).toBe(403)
      await globex.body.dump()
      const initech = await get('initech', '/export/entities.csv?count=3')
      expect(initech.statusCode).toBe(200)
      const csv = await initech.body.text()
      expect(csv).toContain('u***@example.com')
      expect(csv).toContain('[redacted:ssn_us]')
    } finally {
      await proxy.close()
      await demo.close()
    }
  })
})
