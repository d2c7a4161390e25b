// Control-plane REST (sweep 21l):
// 1. GET /v1/tenants/{id}/quotas for a tenant that does not exist answered 200 with an empty list
//    (a typo read as "no quotas set") while /quotas/{kind} answered 404. Now the same 404.
// 2. GET /v1/config/versions/{v} sent no ETag, so a poller could not send If-None-Match as it does
//    on the other reads. Now the document's strong ETag (as GET /v1/config), and 304 on a match.
// 3. A plugin upload refused with 409 (name@version exists with other bytes; another publisher's
//    plugin name) left no audit entry: its `plugins.upload` entry rolled back with the insert.
//    Now a `plugins.reject` entry (reason version_exists / name_taken), and still not counted.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage } from '../helpers/plugins.ts'
import { Conformance } from './openapi-conformance.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-rest21l-'))
const acme = makePublisher('acme', 'acme-2026')
const globex = makePublisher('globex', 'globex-2026')
let cp: TestControlPlane
let oa: Conformance
beforeAll(async () => {
  cp = await startTestControlPlane({ dir: scratch, pluginTrust: parsePluginTrust({ keys: [acme.jwk, globex.jwk] }, 'plugin-trust.json') })
  oa = new Conformance(cp.openapi)
}, 30_000)
afterAll(async () => {
  await cp?.close()
  rmSync(scratch, { recursive: true, force: true })
})

type Problem = { status: number; detail: string }

describe('reads', () => {
  it('a tenant’s quota list is a 404 for a tenant that does not exist, like one quota of it', async () => {
    const put = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 500 }) })
    expect(put.status).toBe(201) // created
    const known = (await oa.check(await cp.api('/v1/tenants/acme/quotas'), 'GET', '/v1/tenants/{id}/quotas')) as { items: { kind: string; limitPerDay: number }[] }
    expect(known.items).toEqual([expect.objectContaining({ kind: 'graphql', limitPerDay: 500 })])

    const one = await cp.api('/v1/tenants/acmee/quotas/graphql')
    const oneProblem = (await oa.check(one, 'GET', '/v1/tenants/{id}/quotas/{kind}')) as Problem
    const list = await cp.api('/v1/tenants/acmee/quotas')
    expect(list.status).toBe(404)
    expect(list.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    expect(await oa.check(list, 'GET', '/v1/tenants/{id}/quotas')).toEqual(oneProblem)
  })

  it('one version of the document has a strong ETag (the document’s) and answers If-None-Match with 304', async () => {
    const first = await cp.api('/v1/config/versions/1')
    const firstEtag = first.headers.get('etag')
    expect(firstEtag).toMatch(/^"[^"]+"$/)
    await oa.check(first, 'GET', '/v1/config/versions/{version}')
    // A new head: version 1 keeps its tag, and the head's version carries GET /v1/config's.
    expect((await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).status).toBe(201)
    const head = await cp.api('/v1/config')
    const { version } = (await head.json()) as { version: number }
    expect(version).toBeGreaterThan(1)
    const latest = await cp.api(`/v1/config/versions/${version}`)
    expect(latest.headers.get('etag')).toBe(head.headers.get('etag'))
    expect(latest.headers.get('etag')).not.toBe(firstEtag)
    await latest.body?.cancel()
    expect((await cp.api('/v1/config/versions/1')).headers.get('etag')).toBe(firstEtag)

    for (const inm of [firstEtag!, `W/${firstEtag}`, `"other", ${firstEtag}`]) {
      const again = await cp.api('/v1/config/versions/1', { headers: { 'if-none-match': inm } })
      expect([inm, again.status]).toEqual([inm, 304])
      expect(again.headers.get('etag')).toBe(firstEtag)
      expect(await oa.check(again, 'GET', '/v1/config/versions/{version}')).toBeUndefined()
    }
    const other = await cp.api('/v1/config/versions/1', { headers: { 'if-none-match': head.headers.get('etag')! } })
    expect(other.status).toBe(200)
    await other.body?.cancel()
  })
})

describe('plugin upload conflicts', () => {
  const auditOf = async (resource: string) =>
    ((await (await cp.api(`/v1/audit?resource=${encodeURIComponent(resource)}`)).json()) as { items: { actor: string; action: string; after: Record<string, unknown> }[] }).items
  const rejections = async () => {
    const text = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
    return ['unsigned', 'bad_signature', 'untrusted_publisher', 'malformed'].reduce((n, reason) => n + (metricSample(text, 'igw_plugin_upload_rejections_total', { reason }) ?? 0), 0)
  }

  it('the same version with other bytes, and another publisher’s plugin name, are 409s audited as plugins.reject', async () => {
    const token = await cp.token({ sub: 'ci-publisher', roles: ['admin', 'plugin-publisher'] })
    const upload = (pkg: unknown) => cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(pkg), token })
    const stored = (await oa.check(await upload(signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact: Buffer.from('first') })), 'POST', '/v1/plugins')) as { digest: string }
    const counted = await rejections()

    const again = signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact: Buffer.from('second') })
    const exists = (await oa.check(await upload(again), 'POST', '/v1/plugins')) as Problem & { current: string }
    expect(exists).toMatchObject({ status: 409, current: stored.digest })
    const taken = (await oa.check(await upload(signedPackage(globex, { name: 'geo-enrich', version: '2.0.0', artifact: Buffer.from('mine') })), 'POST', '/v1/plugins')) as Problem
    expect(taken).toMatchObject({ status: 409, detail: expect.stringContaining('"acme"') })

    expect((await auditOf('plugins/geo-enrich@1.0.0')).filter((e) => e.action === 'plugins.reject')).toEqual([
      expect.objectContaining({ actor: 'ci-publisher', after: expect.objectContaining({ reason: 'version_exists', detail: exists.detail, publisher: 'acme', current: stored.digest, digest: expect.not.stringMatching(stored.digest) }) }),
    ])
    expect(await auditOf('plugins/geo-enrich@2.0.0')).toEqual([
      expect.objectContaining({ actor: 'ci-publisher', action: 'plugins.reject', after: expect.objectContaining({ reason: 'name_taken', detail: taken.detail, publisher: 'globex', owner: 'acme' }) }),
    ])
    // Not a refusal of the package: the rejection counter (and its alert) stays where it was.
    expect(await rejections()).toBe(counted)
    expect((await (await cp.api('/v1/plugins')).json()) as { items: unknown[] }).toMatchObject({ items: [expect.objectContaining({ version: '1.0.0', digest: stored.digest })] })
  })
})
