// Signed plugin uploads through a real control plane over a real SQLite file and a real
// PostgreSQL: accepted and stored, every refusal reason answered with a 4xx naming it, audited in
// the signed log and counted on the unauthenticated /metrics listener; ABAC on plugins.write.
// Every response is checked against the served OpenAPI document.
import { mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { verifyAudit } from '../../control-plane/audit.ts'
import { MAX_PACKAGE_BODY_BYTES } from '../../control-plane/plugin-package.ts'
import { pluginArtifact } from '../../control-plane/plugin-store.ts'
import { loadPluginTrust } from '../../control-plane/plugin-trust.ts'
import { capturingLogger, metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage, writeTrustFile } from '../helpers/plugins.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { Conformance } from './openapi-conformance.ts'

let pg: TestPostgres
const scratch = mkdtempSync(join(tmpdir(), 'igw-plugins-'))
beforeAll(async () => {
  pg = await startPostgres()
})
afterAll(async () => {
  await pg?.close()
  rmSync(scratch, { recursive: true, force: true })
})

const acme = makePublisher('acme', 'acme-2026')
const mallory = makePublisher('mallory')
const trustFile = writeTrustFile(join(scratch, 'plugin-trust.json'), [acme])
const artifact = Buffer.from('\0asm\x01\0\0\0 geo enrichment plugin, version one')

const sample = metricSample

const engines = [
  { name: 'sqlite', db: async () => undefined },
  { name: 'postgres', db: async () => pg.createDatabase(`igw_plugins_${Math.random().toString(36).slice(2, 8)}`) },
]

describe.each(engines)('plugin uploads on $name', (engine) => {
  let cp: TestControlPlane
  let oa: Conformance
  const log = capturingLogger()
  const scrape = async () => {
    const r = await fetch(`${cp.metricsUrl}/metrics`)
    expect(r.status).toBe(200)
    return r.text()
  }
  const upload = (body: unknown, token?: string) => cp.api('/v1/plugins', { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), ...(token !== undefined ? { token } : {}) })
  const auditOf = async (resource: string) => ((await (await cp.api(`/v1/audit?resource=${encodeURIComponent(resource)}`)).json()) as { items: { actor: string; action: string; after: Record<string, unknown> }[] }).items

  beforeAll(async () => {
    const db = await engine.db()
    cp = await startTestControlPlane({ ...(db ? { db } : {}), pluginTrust: loadPluginTrust(trustFile), logger: log.logger })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('/metrics is served unauthenticated on its own listener, with every rejection reason at 0 from the start', async () => {
    const text = await scrape()
    for (const reason of ['unsigned', 'bad_signature', 'untrusted_publisher', 'malformed']) expect(sample(text, 'igw_plugin_upload_rejections_total', { reason }), reason).toBe(0)
    expect(text).toMatch(/^# TYPE igw_plugin_uploads_total counter$/m)
    expect(text).toMatch(/^igw_process_resident_memory_bytes \d+/m)
    // Only /metrics there; and the API port does not serve it (it stays bearer-only).
    expect((await fetch(`${cp.metricsUrl}/v1/config`)).status).toBe(404)
    const onApi = await cp.api('/metrics', { token: '' })
    expect(onApi.status).toBe(404)
  })

  it('a package signed by a trusted publisher key is stored, listed, audited and counted', async () => {
    const publisher = await cp.token({ sub: 'ci-publisher', roles: ['plugin-publisher'] })
    const res = await upload(signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact, description: 'adds geo fields' }), publisher)
    const body = (await oa.check(res, 'POST', '/v1/plugins')) as Record<string, unknown>
    expect(res.status).toBe(201)
    expect(body).toMatchObject({ name: 'geo-enrich', version: '1.0.0', publisher: 'acme', keyId: 'acme-2026', size: artifact.length, uploadedBy: 'ci-publisher', description: 'adds geo fields' })
    expect(body.digest).toMatch(/^sha256:[0-9a-f]{64}$/)
    // Stored byte for byte.
    expect(Buffer.from((await pluginArtifact(cp.db, 'geo-enrich', '1.0.0'))!, 'base64').equals(artifact)).toBe(true)
    const list = await cp.api('/v1/plugins', { token: await cp.token({ roles: ['viewer'] }) })
    expect(await oa.check(list, 'GET', '/v1/plugins')).toEqual({ items: [body] })
    const filtered = await cp.api('/v1/plugins?publisher=someone-else')
    expect(await oa.check(filtered, 'GET', '/v1/plugins')).toEqual({ items: [] })
    expect(log.lines.find((l) => l.msg === 'plugin uploaded')).toMatchObject({ actor: 'ci-publisher', plugin: 'geo-enrich@1.0.0', publisher: 'acme', keyId: 'acme-2026' })
    const audit = await auditOf('plugins/geo-enrich@1.0.0')
    expect(audit).toEqual([expect.objectContaining({ actor: 'ci-publisher', action: 'plugins.upload', after: expect.objectContaining({ publisher: 'acme', keyId: 'acme-2026', digest: body.digest }) })])
    const text = await scrape()
    expect(sample(text, 'igw_plugin_uploads_total', { publisher: 'acme' })).toBe(1)
    expect(sample(text, 'igw_control_plane_audit_appends_total', { action: 'plugins.upload' })).toBe(1)
    expect(sample(text, 'igw_control_plane_requests_total', { route: '/v1/plugins', method: 'POST', status: '201' })).toBe(1)
    // The same name@version again is a conflict, not a new row and not a refusal of the package.
    const again = await upload(signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact: Buffer.from('other bytes') }))
    expect(await oa.check(again, 'POST', '/v1/plugins')).toMatchObject({ status: 409, detail: expect.stringContaining('versions are immutable') })
    expect((await (await cp.api('/v1/plugins')).json()) as { items: unknown[] }).toMatchObject({ items: [expect.objectContaining({ version: '1.0.0' })] })
  })

  const refusals: { reason: string; status: number; what: string; body: () => unknown; detail: RegExp; resource: string }[] = [
    { reason: 'unsigned', status: 422, what: 'no signature', body: () => ({ ...signedPackage(acme, { name: 'geo-enrich', version: '1.1.0', artifact }), signature: undefined }), detail: /^unsigned plugin package acme\/geo-enrich@1\.1\.0/, resource: 'plugins/geo-enrich@1.1.0' },
    {
      reason: 'bad_signature',
      status: 422,
      what: 'a tampered artifact',
      body: () => ({ ...signedPackage(acme, { name: 'geo-enrich', version: '1.2.0', artifact }), artifact: Buffer.concat([artifact, Buffer.from(' + backdoor')]).toString('base64') }),
      detail: /^bad signature on acme\/geo-enrich@1\.2\.0: it does not verify with the trusted key "acme-2026"/,
      resource: 'plugins/geo-enrich@1.2.0',
    },
    { reason: 'untrusted_publisher', status: 422, what: 'an unknown publisher', body: () => signedPackage(mallory, { name: 'geo-enrich', version: '1.3.0', artifact }), detail: /^untrusted publisher "mallory"/, resource: 'plugins/geo-enrich@1.3.0' },
    { reason: 'malformed', status: 400, what: 'a package without an artifact', body: () => ({ name: 'geo-enrich', version: '1.4.0', publisher: 'acme', signature: 'AAAA' }), detail: /^malformed plugin package: artifact: required/, resource: 'plugins/geo-enrich@1.4.0' },
    { reason: 'malformed', status: 400, what: 'a body that is not JSON', body: () => '{"name": "geo-enrich", ', detail: /^malformed plugin package: body is not valid JSON/, resource: 'plugins' },
  ]

  it.each(refusals)('$what → $status, reason $reason: nothing stored, audited, logged as refused, counted once', async (c) => {
    const before = await scrape()
    const actor = `uploader-${c.what.replace(/\W+/g, '-')}`
    const res = await upload(c.body(), await cp.token({ sub: actor, attrs: ['plugins.write'] }))
    const problem = (await oa.check(res, 'POST', '/v1/plugins')) as { status: number; detail: string; reason: string }
    expect(problem.status).toBe(c.status)
    expect(problem.reason).toBe(c.reason)
    expect(problem.detail).toMatch(c.detail)
    const after = await scrape()
    for (const reason of ['unsigned', 'bad_signature', 'untrusted_publisher', 'malformed']) {
      const delta = sample(after, 'igw_plugin_upload_rejections_total', { reason })! - sample(before, 'igw_plugin_upload_rejections_total', { reason })!
      expect(delta, reason).toBe(reason === c.reason ? 1 : 0)
    }
    expect(sample(after, 'igw_plugin_uploads_total', { publisher: 'acme' })).toBe(sample(before, 'igw_plugin_uploads_total', { publisher: 'acme' }))
    const audit = (await auditOf(c.resource)).filter((e) => e.actor === actor)
    expect(audit).toEqual([expect.objectContaining({ action: 'plugins.reject', after: expect.objectContaining({ reason: c.reason, detail: problem.detail }) })])
    const stored = (await (await cp.api('/v1/plugins')).json()) as { items: { version: string }[] }
    expect(stored.items.map((i) => i.version)).toEqual(['1.0.0'])
    expect(log.lines.filter((l) => l.msg === 'plugin upload refused' && l.actor === actor)).toEqual([expect.objectContaining({ level: 40, reason: c.reason, detail: problem.detail })])
  })

  it('a body declared larger than the limit is malformed (413), answered before it is read', async () => {
    const before = await scrape()
    const token = await cp.token({ sub: 'big-uploader', roles: ['plugin-publisher'] })
    const { port } = new URL(cp.url)
    // A raw socket: the headers promise more than the limit, and no body follows.
    const socket = connect(Number(port), '127.0.0.1')
    socket.write(`POST /v1/plugins HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: ${MAX_PACKAGE_BODY_BYTES + 1}\r\n\r\n`)
    let raw = ''
    socket.on('data', (d: Buffer) => (raw += d.toString()))
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        const i = raw.indexOf('\r\n\r\n')
        if (i !== -1 && raw.length >= i + 4 + Number(/content-length: (\d+)/i.exec(raw)?.[1] ?? 0)) {
          clearInterval(t)
          resolve()
        }
      }, 10)
      socket.on('error', reject)
    })
    socket.destroy()
    expect(raw).toMatch(/^HTTP\/1\.1 413 /)
    const problem = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { reason: string; detail: string }
    expect(problem).toMatchObject({ reason: 'malformed', detail: `malformed plugin package: body larger than ${MAX_PACKAGE_BODY_BYTES} bytes` })
    expect(sample(await scrape(), 'igw_plugin_upload_rejections_total', { reason: 'malformed' })).toBe(sample(before, 'igw_plugin_upload_rejections_total', { reason: 'malformed' })! + 1)
    expect((await auditOf('plugins')).filter((e) => e.actor === 'big-uploader')).toEqual([expect.objectContaining({ action: 'plugins.reject', after: expect.objectContaining({ reason: 'malformed' }) })])
  })

  it('a body of the wrong type is malformed (415)', async () => {
    const res = await cp.api('/v1/plugins', { method: 'POST', body: 'name=geo', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
    expect(await oa.check(res, 'POST', '/v1/plugins')).toMatchObject({ status: 415, reason: 'malformed' })
  })

  it('without plugins.write: 403 with the policy reason, before the package is read (not an upload refusal; audited as plugins.write.denied)', async () => {
    const before = await scrape()
    // Fresh subjects per attempt: a refused write is audited once per actor and action a minute.
    const run = Math.random().toString(36).slice(2, 8)
    const pkg = { ...signedPackage(acme, { name: 'geo-enrich', version: '2.0.0', artifact }), signature: null }
    const operator = await upload(pkg, await cp.token({ sub: `ops-${run}`, roles: ['operator'] }))
    expect(await oa.check(operator, 'POST', '/v1/plugins')).toMatchObject({ status: 403, detail: 'plugins.write on plugins denied: subject lacks the "plugins.write" attribute' })
    const scoped = await upload(pkg, await cp.token({ sub: `acme-admin-${run}`, roles: ['admin'], tenant: 'acme' }))
    expect(await oa.check(scoped, 'POST', '/v1/plugins')).toMatchObject({ status: 403, detail: expect.stringContaining('scoped to tenant "acme"') })
    const anonymous = await upload(pkg, '')
    expect(await oa.check(anonymous, 'POST', '/v1/plugins')).toMatchObject({ status: 401 })
    const after = await scrape()
    expect(sample(after, 'igw_plugin_upload_rejections_total', { reason: 'unsigned' })).toBe(sample(before, 'igw_plugin_upload_rejections_total', { reason: 'unsigned' }))
    expect(sample(after, 'igw_control_plane_requests_total', { route: '/v1/plugins', method: 'POST', status: '403' })).toBe((sample(before, 'igw_control_plane_requests_total', { route: '/v1/plugins', method: 'POST', status: '403' }) ?? 0) + 2)
    const items = ((await (await cp.api('/v1/audit?limit=1000')).json()) as { items: { actor: string; action: string }[] }).items.filter((e) => e.actor.endsWith(run))
    expect(items.map((e) => [e.actor, e.action]).sort()).toEqual([
      [`acme-admin-${run}`, 'plugins.write.denied'],
      [`ops-${run}`, 'plugins.write.denied'],
    ])
  })

  it('the audit chain with upload and refusal entries still verifies', async () => {
    const r = await verifyAudit(cp.db, cp.store.key.publicKey)
    expect(r.problems).toEqual([])
    expect(r.ok).toBe(true)
    expect(r.entries).toBeGreaterThanOrEqual(7) // seed + 1 upload + 5 refusals (+ the 415)
  })
})
