// Tenant filter sweep 21f: a token whose header lists a critical extension ("crit", RFC 7515
// §4.1.11) the verifier does not understand must be refused — it was, but as "no key matches the
// token": jose's "not supported" was taken for a key that cannot serve the token, so the 401 (and
// its WWW-Authenticate) sent operators looking for a missing key. Real proxy, real graphql-yoga
// backend, tokens signed with node:crypto (jose will not sign an unknown "crit"), undici.
import { createHmac, generateKeyPairSync, sign } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'c'.repeat(40)
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
const exp = () => Math.floor(Date.now() / 1000) + 300

async function gql(url: string, token: string) {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: '{"query":"{ hello }"}' })
  const body = (await res.body.json()) as { errors?: { message: string }[] }
  return { status: res.statusCode, challenge: res.headers['www-authenticate'], message: body.errors?.[0]?.message }
}

describe('tenant JWT with an unknown critical header (sweep 21f)', () => {
  let backend: DemoBackend
  let p: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-tenant-crit21f-'))
  const ed = generateKeyPairSync('ed25519')

  beforeAll(async () => {
    backend = await startDemoBackend()
    const pem = join(dir, 'ed.pem')
    writeFileSync(pem, ed.publicKey.export({ type: 'spki', format: 'pem' }) as string)
    p = await startTestProxy({
      tenants: { acme: {} },
      routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'tenant', jwt: { secret: SECRET, publicKeyFile: pem, algorithms: ['HS256', 'EdDSA'] } }] as never }],
    })
  })
  afterAll(async () => {
    await p?.close()
    await backend?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const hs256 = (header: object) => {
    const input = `${b64({ alg: 'HS256', ...header })}.${b64({ tenant_id: 'acme', exp: exp() })}`
    return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`
  }
  const eddsa = (header: object) => {
    const input = `${b64({ alg: 'EdDSA', ...header })}.${b64({ tenant_id: 'acme', exp: exp() })}`
    return `${input}.${sign(null, Buffer.from(input), ed.privateKey).toString('base64url')}`
  }

  it('is refused naming the critical header, whichever key signed it', async () => {
    // Signed well, by a configured key: only "crit" is wrong with them.
    expect((await gql(p.url, hs256({}))).status).toBe(200)
    expect((await gql(p.url, eddsa({}))).status).toBe(200)
    for (const token of [hs256({ crit: ['x-policy'], 'x-policy': 1 }), eddsa({ crit: ['x-policy'], 'x-policy': 1 })]) {
      const r = await gql(p.url, token)
      expect(r.status).toBe(401)
      expect(r.message).toBe('token header "crit" names an extension this gateway does not support')
      expect(r.challenge).toBe(`Bearer realm="igw", error="invalid_token", error_description="token header 'crit' names an extension this gateway does not support"`)
    }
  })
})
