// Text that is not valid Unicode where the admin policy reads it. A JWT is JSON: a claim may
// hold a lone UTF-16 surrogate ("\ud800"), which JavaScript keeps as a string but the policy
// engine's JSON parser refuses. Such a token got a 403 carrying the engine's parse error
// ("policy evaluation failed: policy admin (intelgraph/admin/decision): illegal string escape
// character") instead of the 401 of an unusable credential; a GraphQL String variable holding
// one got FORBIDDEN with the same internal text. Real control plane (HTTP, SQLite), real
// opa-wasm policy, tokens signed with the test HMAC secret.
import { createHmac } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
})
afterAll(async () => {
  await cp?.close()
})

/** An HS256 token whose payload is exactly this JSON text (jose's SignJWT would re-encode it). */
function rawToken(payloadJson: string): string {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64url')
  const head = b64('{"alg":"HS256","typ":"JWT"}')
  const body = b64(payloadJson)
  const sig = createHmac('sha256', TEST_AUTH_SECRET).update(`${head}.${body}`).digest('base64url')
  return `${head}.${body}.${sig}`
}

const exp = () => Math.floor(Date.now() / 1000) + 3600

// The claim each token spoils, and the payload (JSON text with the escape as the token carries it).
const CASES: [claim: string, payload: () => string][] = [
  ['sub', () => `{"sub":"alice\\ud800","roles":["admin"],"exp":${exp()}}`],
  ['tenant', () => `{"sub":"alice","roles":["admin"],"tenant":"acme\\udfff","exp":${exp()}}`],
  ['roles', () => `{"sub":"alice","roles":["admin","\\ud83d"],"exp":${exp()}}`],
  ['attrs', () => `{"sub":"alice","attrs":["admin.read","x\\udc00y"],"exp":${exp()}}`],
]

describe('a JWT whose claims hold a lone UTF-16 surrogate (sweep 17)', () => {
  for (const [claim, payload] of CASES) {
    it(`"${claim}": REST answers 401 (invalid token) naming the claim, not a 403 with the policy engine's parse error`, async () => {
      const r = await cp.api('/v1/tenants', { token: rawToken(payload()) })
      const text = await r.text()
      expect(r.status).toBe(401)
      expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/)
      const body = JSON.parse(text) as { status: number; title: string; detail: string }
      expect(body).toMatchObject({ status: 401, title: 'Unauthorized' })
      expect(body.detail).toBe(`token "${claim}" claim is not valid Unicode (it holds a lone UTF-16 surrogate)`)
      expect(text).not.toMatch(/policy|escape|intelgraph/)
    })

    it(`"${claim}": /graphql answers 401 UNAUTHENTICATED, like any other invalid token`, async () => {
      const r = await cp.api('/graphql', { method: 'POST', token: rawToken(payload()), body: JSON.stringify({ query: '{ quotas(tenant: "acme") { kind } }' }) })
      const text = await r.text()
      expect(r.status).toBe(401)
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token"/)
      expect(JSON.parse(text)).toEqual({ errors: [{ message: `token "${claim}" claim is not valid Unicode (it holds a lone UTF-16 surrogate)`, extensions: { code: 'UNAUTHENTICATED' } }] })
      expect(text).not.toMatch(/policy|escape/)
    })
  }

  it('well-formed non-BMP text (a surrogate pair) in the same claims is an ordinary token', async () => {
    const ok = rawToken(`{"sub":"alice\\ud83d\\ude00","roles":["admin"],"exp":${exp()}}`)
    expect((await cp.api('/v1/tenants', { token: ok })).status).toBe(200)
  })

  it('a surrogate in a claim the policy does not read is not a reason to refuse the token', async () => {
    const ok = rawToken(`{"sub":"alice","roles":["admin"],"nickname":"\\ud800","exp":${exp()}}`)
    expect((await cp.api('/v1/tenants', { token: ok })).status).toBe(200)
  })
})

describe('a lone surrogate that reaches the admin policy another way (sweep 17)', () => {
  it('a GraphQL String variable is BAD_USER_INPUT naming the argument, not FORBIDDEN with the engine error', async () => {
    // JSON text written by hand: JSON.stringify would write the same escape, but this is what a client sends.
    const body = '{"query":"query Q($t: String) { quotas(tenant: $t) { kind } }","variables":{"t":"acme\\ud800"}}'
    const r = await cp.api('/graphql', { method: 'POST', body })
    const text = await r.text()
    expect(r.status).toBe(200)
    const out = JSON.parse(text) as { data: unknown; errors: { message: string; extensions: { code: string } }[] }
    expect(out.data).toBeNull()
    expect(out.errors).toHaveLength(1)
    expect(out.errors[0]).toMatchObject({ message: 'argument "tenant" is not valid Unicode (it holds a lone UTF-16 surrogate)', extensions: { code: 'BAD_USER_INPUT' } })
    expect(text).not.toMatch(/policy|escape/)
  })

  it('a mutation argument is refused the same way, and nothing is committed', async () => {
    const before = ((await (await cp.api('/v1/config')).json()) as { version: number }).version
    const body = '{"query":"mutation M($p: String!) { setDlpPreset(preset: $p, tenant: \\"acme\\") }","variables":{"p":"mask\\udc00"}}'
    const out = (await (await cp.api('/graphql', { method: 'POST', body })).json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(out.errors[0]).toMatchObject({ message: 'argument "preset" is not valid Unicode (it holds a lone UTF-16 surrogate)', extensions: { code: 'BAD_USER_INPUT' } })
    expect(((await (await cp.api('/v1/config')).json()) as { version: number }).version).toBe(before)
  })

  it('the policy dry run with such a subject denies with a reason about the text, not the engine parse error', async () => {
    const body = '{"subject":{"sub":"x\\ud800","roles":["admin"],"attributes":[]},"action":"admin.read","resource":{"type":"config"}}'
    const r = await cp.api('/v1/policies/admin/decide', { method: 'POST', body })
    expect(r.status).toBe(200)
    expect(await r.json()).toEqual({ allow: false, reason: 'the request holds text that is not valid Unicode (a lone UTF-16 surrogate)' })
  })
})
