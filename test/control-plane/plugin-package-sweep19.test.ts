// Plugin packages whose stored text would not be what was verified: base64 in a non-canonical
// form (non-zero unused bits, which Node's decoder ignores and strict decoders refuse) and a
// description with a lone UTF-16 surrogate (stored as U+FFFD by both engines). Through a real
// control plane over SQLite and a real PostgreSQL, and the pure decision.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkPackage } from '../../control-plane/plugin-package.ts'
import { pluginArtifact } from '../../control-plane/plugin-store.ts'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage } from '../helpers/plugins.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

const acme = makePublisher('acme', 'acme-2026')
const trusted = parsePluginTrust({ keys: [acme.jwk] }, 'plugin-trust.json')

/** The same bytes, with the unused low bits of the last character before the padding set. */
function nonCanonical(b64: string): string {
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0
  expect(pad).toBeGreaterThan(0)
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  const i = b64.length - pad - 1
  const out = `${b64.slice(0, i)}${alphabet[alphabet.indexOf(b64[i]!) | 1]}${b64.slice(i + 1)}`
  expect(out).not.toBe(b64)
  expect(Buffer.from(out, 'base64').equals(Buffer.from(b64, 'base64'))).toBe(true)
  return out
}

describe('base64 in its canonical form only', () => {
  const artifact = Buffer.from('A') // "QQ==": 4 unused bits
  it('an artifact whose padding bits are not zero is malformed; the canonical one is accepted', () => {
    const pkg = signedPackage(acme, { name: 'geo', version: '1.0.0', artifact })
    expect(checkPackage(pkg, trusted)).toMatchObject({ ok: true, plugin: { artifact: 'QQ==' } })
    const d = checkPackage({ ...pkg, artifact: nonCanonical(pkg.artifact as string) }, trusted)
    expect(d).toMatchObject({ ok: false, reason: 'malformed', message: expect.stringMatching(/^malformed plugin package: artifact: expected the artifact bytes, base64 .*unused bits zero/) })
    // A 2-byte artifact ends in one "=" (2 unused bits).
    const two = signedPackage(acme, { name: 'geo', version: '1.0.1', artifact: Buffer.from('AB') })
    expect(checkPackage(two, trusted)).toMatchObject({ ok: true })
    expect(checkPackage({ ...two, artifact: nonCanonical(two.artifact as string) }, trusted)).toMatchObject({ ok: false, reason: 'malformed' })
  })

  it('so is a signature in a non-canonical form (the stored signature is the one that verified)', () => {
    const pkg = signedPackage(acme, { name: 'geo', version: '1.0.0', artifact })
    const d = checkPackage({ ...pkg, signature: nonCanonical(pkg.signature as string) }, trusted)
    expect(d).toMatchObject({ ok: false, reason: 'malformed', message: expect.stringMatching(/^malformed plugin package: signature: expected the signature, base64/) })
  })
})

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

const engines = [
  { name: 'sqlite', db: async () => undefined },
  { name: 'postgres', db: async () => pg.createDatabase(`igw_plugins19_${Math.random().toString(36).slice(2, 8)}`) },
]

describe.each(engines)('uploads on $name', (engine) => {
  let cp: TestControlPlane
  beforeAll(async () => {
    const db = await engine.db()
    cp = await startTestControlPlane({ ...(db ? { db } : {}), pluginTrust: trusted })
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })
  const upload = (body: unknown) => cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(body) })
  const listed = async () => ((await (await cp.api('/v1/plugins')).json()) as { items: { name: string; version: string; description: string | null }[] }).items

  it('a description with a lone surrogate is malformed (it would be stored as another text than the 201 shows)', async () => {
    const bad = await upload(signedPackage(acme, { name: 'geo', version: '1.0.0', artifact: Buffer.from('plugin'), description: 'geo \ud800 enrich' }))
    expect(bad.status).toBe(400)
    expect(await bad.json()).toMatchObject({ reason: 'malformed', detail: expect.stringContaining('description: must be valid Unicode') })
    expect(await listed()).toEqual([])

    // A well-formed description outside the BMP (a surrogate pair) is kept as sent.
    const description = 'geo enrich 🌍'
    const ok = await upload(signedPackage(acme, { name: 'geo', version: '1.0.0', artifact: Buffer.from('plugin'), description }))
    expect(ok.status).toBe(201)
    expect(await ok.json()).toMatchObject({ description })
    expect(await listed()).toEqual([expect.objectContaining({ name: 'geo', version: '1.0.0', description })])
  })

  it('a non-canonical artifact is refused; what is stored is the canonical text of the signed bytes', async () => {
    const artifact = Buffer.from('wasm!') // 5 bytes: one "=" of padding
    const pkg = signedPackage(acme, { name: 'geo-b', version: '1.0.0', artifact })
    const bad = await upload({ ...pkg, artifact: nonCanonical(pkg.artifact as string) })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toMatchObject({ reason: 'malformed', detail: expect.stringContaining('artifact: expected the artifact bytes, base64') })
    expect(await pluginArtifact(cp.db, 'geo-b', '1.0.0')).toBeUndefined()
    expect((await upload(pkg)).status).toBe(201)
    expect(await pluginArtifact(cp.db, 'geo-b', '1.0.0')).toBe(artifact.toString('base64'))
  })
})
