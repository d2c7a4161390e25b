// The description the catalog shows beside a signed plugin was not covered by the signature:
// anyone holding plugins.write and a package a publisher had signed (from its release page, a
// mirror, a CI log) could publish it first under the publisher's name with a description of their
// own ("official; set X to disable auth"), and immutability kept that text there for good. A
// package with a description now signs the v2 statement, which covers it; a v1 signature over a
// package with a description is a bad_signature. v1 without a description, and rows stored before
// v2, stay accepted and trusted. Through a real control plane (SQLite) and the pure decision.
import { createHash, sign } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkPackage, trustOf } from '../../control-plane/plugin-package.ts'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, type TestPublisher } from '../helpers/plugins.ts'

const acme = makePublisher('acme', 'acme-2026')
const trusted = parsePluginTrust({ keys: [acme.jwk] }, 'plugin-trust.json')
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

/** Signed as the docs say a publisher signs, built here independently of the control plane. */
function pkg(signer: TestPublisher, p: { name: string; version: string; artifact: Buffer; description?: string }, signAs: 'v1' | 'v2') {
  const v1 = `igw-plugin/v1:${signer.publisher}/${p.name}@${p.version}:sha256:${sha(p.artifact)}`
  const statement = signAs === 'v1' ? v1 : `${v1.replace('igw-plugin/v1:', 'igw-plugin/v2:')}:description-sha256:${sha(p.description ?? '')}`
  const signature = sign(null, Buffer.from(statement), signer.privateKey).toString('base64')
  return { name: p.name, version: p.version, publisher: signer.publisher, ...(p.description === undefined ? {} : { description: p.description }), artifact: p.artifact.toString('base64'), signature }
}

describe('the description is signed', () => {
  const artifact = Buffer.from('\0asm geo')
  it('a v1 signature does not vouch for a description; v2 does, and only for that description', () => {
    const v1 = pkg(acme, { name: 'geo', version: '1.0.0', artifact }, 'v1')
    expect(checkPackage(v1, trusted)).toMatchObject({ ok: true, plugin: { description: undefined } })
    const d = checkPackage({ ...v1, description: 'official acme plugin: set auth.disabled' }, trusted)
    expect(d).toMatchObject({ ok: false, reason: 'bad_signature' })
    expect(!d.ok && d.message).toContain(`igw-plugin/v2:acme/geo@1.0.0:sha256:${sha(artifact)}:description-sha256:${sha('official acme plugin: set auth.disabled')}`)

    const v2 = pkg(acme, { name: 'geo', version: '1.0.0', artifact, description: 'adds geo fields 🌍' }, 'v2')
    expect(checkPackage(v2, trusted)).toMatchObject({ ok: true, plugin: { description: 'adds geo fields 🌍' } })
    expect(checkPackage({ ...v2, description: 'adds geo fields' }, trusted)).toMatchObject({ ok: false, reason: 'bad_signature' })
    // An unsigned package with a description is told the v2 statement to sign.
    expect(checkPackage({ ...v2, signature: null }, trusted)).toMatchObject({ ok: false, reason: 'unsigned', message: expect.stringContaining(':description-sha256:') })
  })

  it('stored plugins stay trusted: v2 rows, and rows stored before v2 with a description under v1', () => {
    const at = (p: ReturnType<typeof pkg>, description: string | null) => ({ ...p, description, keyId: 'acme-2026', digest: `sha256:${sha(artifact)}` })
    const v2 = pkg(acme, { name: 'geo', version: '1.0.0', artifact, description: 'adds geo fields' }, 'v2')
    expect(trustOf(at(v2, 'adds geo fields'), trusted)).toBe('trusted')
    expect(trustOf(at(v2, 'another text'), trusted)).toBe('revoked')
    expect(trustOf(at(pkg(acme, { name: 'geo', version: '1.0.0', artifact }, 'v1'), 'legacy text'), trusted)).toBe('trusted')
    expect(trustOf(at(pkg(acme, { name: 'geo', version: '1.0.0', artifact }, 'v1'), null), trusted)).toBe('trusted')
  })
})

describe('over the API', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane({ pluginTrust: trusted })
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })
  const upload = (body: unknown) => cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(body) })
  const listed = async () => ((await (await cp.api('/v1/plugins')).json()) as { items: { name: string; version: string; description: string | null; trust: string }[] }).items

  it('a signed package re-described by the uploader is refused and audited; the publisher’s own description is kept', async () => {
    const artifact = Buffer.from('\0asm geo')
    const signed = pkg(acme, { name: 'geo', version: '1.0.0', artifact }, 'v1')
    const hijack = await upload({ ...signed, description: 'official acme plugin: set auth.disabled' })
    expect(hijack.status).toBe(422)
    expect(await hijack.json()).toMatchObject({ reason: 'bad_signature', detail: expect.stringContaining('leaves the description out') })
    expect(await listed()).toEqual([])
    const audit = (await (await cp.api('/v1/audit?resource=plugins/geo@1.0.0')).json()) as { items: { action: string; after: { reason: string } }[] }
    expect(audit.items).toEqual([expect.objectContaining({ action: 'plugins.reject', after: expect.objectContaining({ reason: 'bad_signature' }) })])

    const ok = await upload(pkg(acme, { name: 'geo', version: '1.0.0', artifact, description: 'adds geo fields' }, 'v2'))
    expect(ok.status, await ok.clone().text()).toBe(201)
    expect(await ok.json()).toMatchObject({ description: 'adds geo fields', trust: 'trusted' })
    expect((await upload(pkg(acme, { name: 'geo', version: '1.0.1', artifact }, 'v1'))).status).toBe(201)
    expect(await listed()).toEqual([
      expect.objectContaining({ version: '1.0.0', description: 'adds geo fields', trust: 'trusted' }),
      expect.objectContaining({ version: '1.0.1', description: null, trust: 'trusted' }),
    ])
  })
})
