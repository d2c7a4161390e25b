// Control plane authentication and authorization at their edges: a JWKS holding the old and the
// new key of a rotation with tokens that carry no "kid", the 401 reason when several verification
// methods are configured, and an admin policy whose decision is not {allow: boolean, reason}.
// Real control plane (real HTTP, real SQLite), real jose keys, real opa CLI and opa-wasm.
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose'
import { pino } from 'pino'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AuthError, Authorizer } from '../../control-plane/auth.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { opaBinary } from '../../policies/toolchain.ts'
import { seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-auth-sweep16-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

type Pair = { publicKey: CryptoKey; privateKey: CryptoKey }

const sign = (key: Pair, o: { kid?: string; exp?: string | number } = {}) =>
  new SignJWT({ roles: ['admin'] })
    .setProtectedHeader({ alg: 'RS256', ...(o.kid ? { kid: o.kid } : {}) })
    .setSubject('rotating-admin')
    .setIssuedAt()
    .setExpirationTime(o.exp ?? '1h')
    .sign(key.privateKey)

describe('a JWKS with the old and the new key of a rotation (and an HMAC secret beside it)', () => {
  let cp: ControlPlane
  let oldKey: Pair
  let newKey: Pair
  let stranger: Pair
  beforeAll(async () => {
    ;[oldKey, newKey, stranger] = await Promise.all([generateKeyPair('RS256'), generateKeyPair('RS256'), generateKeyPair('RS256')])
    const jwks = join(dir, 'jwks.json')
    writeFileSync(jwks, JSON.stringify({ keys: [{ ...(await exportJWK(oldKey.publicKey)), kid: 'old', alg: 'RS256', use: 'sig' }, { ...(await exportJWK(newKey.publicKey)), kid: 'new', alg: 'RS256', use: 'sig' }] }))
    cp = await startControlPlane({
      db: `sqlite:${join(dir, 'igw.db')}`,
      host: '127.0.0.1',
      port: 0,
      auth: { jwksFile: jwks, secret: TEST_AUTH_SECRET },
      signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')),
      seed: seedDocument(),
      logger: pino({ level: 'silent' }),
    })
  })
  afterAll(async () => {
    await cp?.close()
  })

  const get = async (token: string) => {
    const r = await request(`${cp.url}/v1/tenants`, { headers: { authorization: `Bearer ${token}` } })
    const text = await r.body.text()
    return { status: r.statusCode, detail: r.statusCode === 200 ? undefined : (JSON.parse(text) as { detail?: string }).detail }
  }

  it('tokens without "kid" signed by either key are accepted; one signed by no listed key is a bad signature', async () => {
    // Before: jose found two candidate keys and refused to choose: 401 "token rejected" for every
    // token without a kid, even perfectly valid ones.
    expect(await get(await sign(oldKey))).toEqual({ status: 200, detail: undefined })
    expect(await get(await sign(newKey))).toEqual({ status: 200, detail: undefined })
    expect(await get(await sign(newKey, { kid: 'new' }))).toEqual({ status: 200, detail: undefined })
    expect(await get(await sign(stranger))).toEqual({ status: 401, detail: 'token signature does not verify' })
  })

  it('a claim refused after the signature verified is final and named (expired), for kid-less tokens too', async () => {
    const past = Math.floor(Date.now() / 1000) - 3600
    expect(await get(await sign(newKey, { exp: past }))).toEqual({ status: 401, detail: 'token expired' })
  })

  it('the 401 reason is the one of the key that got furthest, not the HMAC secret that cannot take RS256', async () => {
    // Before: both read 'token algorithm "RS256" is not accepted by the configured verification
    // keys', although the JWKS takes RS256: the secret, tried last, overwrote the JWKS's reason.
    expect(await get(await sign(stranger, { kid: 'new' }))).toEqual({ status: 401, detail: 'token signature does not verify' })
    expect(await get(await sign(newKey, { kid: 'retired-2019' }))).toEqual({ status: 401, detail: 'no key matches the token' })
    // An HS256 token still verifies against the secret, past the JWKS that cannot take it.
    const hs = await new SignJWT({ roles: ['viewer'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('hmac-viewer').setExpirationTime('1h').sign(new TextEncoder().encode(TEST_AUTH_SECRET))
    expect(await get(hs)).toEqual({ status: 200, detail: undefined })
    // And an algorithm nothing configured takes is still said so.
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"x"}').toString('base64url')}.`
    expect(await get(none)).toEqual({ status: 401, detail: 'token algorithm "none" is not accepted by the configured verification keys' })
  })
})

describe('an admin policy whose decision is malformed denies', () => {
  /** Build one Rego file into a wasm bundle with the real opa CLI. */
  function build(name: string, rego: string): string {
    const src = join(dir, name)
    mkdirSync(src, { recursive: true })
    writeFileSync(join(src, 'policy.rego'), rego)
    const out = join(dir, `${name}.tar.gz`)
    const r = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/admin/decision', '-o', out, src], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`opa build: ${r.stderr}`)
    return out
  }

  // An edited authz.rego with typical slips: a string where a boolean belongs, a bare boolean for
  // the whole decision, a reason that is not a string, extra fields.
  const SLIPS = `package intelgraph.admin

decision := {"allow": "no", "reason": "string allow"} if input.action == "admin.write"

decision := true if input.action == "admin.read"

decision := {"allow": false, "reason": 7} if input.action == "dlp.review"

decision := {"allow": true, "reason": "fine", "debug": {"why": "role"}} if input.action == "proxy.sync"
`

  it('a truthy non-boolean "allow" or a bare true is a deny (403) saying the decision is malformed, never an allow', async () => {
    const authz = await Authorizer.load(build('slips', SLIPS))
    const subject = { sub: 'x', roles: ['admin'], attributes: [] }
    const malformed = 'policy returned a malformed decision (expected {"allow": boolean, "reason": string})'
    // Before: {"allow": "no"} was truthy, so require() let the write through.
    expect(authz.decide(subject, 'admin.write', { type: 'config' })).toEqual({ allow: false, reason: malformed })
    const err = (() => {
      try {
        authz.require(subject, 'admin.write', { type: 'config' })
      } catch (e) {
        return e
      }
    })()
    expect(err).toBeInstanceOf(AuthError)
    expect([(err as AuthError).status, (err as AuthError).message]).toEqual([403, `admin.write on config denied: ${malformed}`])
    // Before: `true` was returned as the decision: allow undefined, reason undefined ("denied: undefined").
    expect(authz.decide(subject, 'admin.read', { type: 'config' })).toEqual({ allow: false, reason: malformed })
    // A deny without a usable reason still says something.
    expect(authz.decide(subject, 'dlp.review', { type: 'dlp' })).toEqual({ allow: false, reason: 'denied by policy' })
    // A well-formed allow is an allow, and only {allow, reason} leaves the Authorizer.
    expect(authz.decide(subject, 'proxy.sync', { type: 'stream' })).toEqual({ allow: true, reason: 'fine' })
    expect(() => authz.require(subject, 'proxy.sync', { type: 'stream' })).not.toThrow()
    // No decision at all is a deny, as before.
    expect(authz.decide(subject, 'plugins.write', { type: 'plugins' })).toEqual({ allow: false, reason: 'policy returned no decision' })
  })
})
