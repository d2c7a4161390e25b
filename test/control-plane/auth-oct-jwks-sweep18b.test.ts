// Admin tokens signed with a shared secret listed in the control plane's --auth-jwks file
// ("kty": "oct", as Envoy's local_jwks takes them) were all refused: jose's local key set holds
// public keys only. They verify now, by kid and alg; a wrong secret stays a 401, and a key too
// short to be safe stops the start, naming the file and never quoting the secret.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import pino from 'pino'
import { request } from 'undici'
import { afterAll, describe, expect, it } from 'vitest'
import { startControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { seedDocument } from '../helpers/control-plane.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-cp-oct-'))
const SECRET = Buffer.from('an-admin-hmac-secret-of-32-bytes-or-more!!')
const start = (jwksFile: string) =>
  startControlPlane({ db: `sqlite:${join(dir, `igw-${Math.random()}.db`)}`, host: '127.0.0.1', port: 0, auth: { jwksFile }, signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')), seed: seedDocument(), logger: pino({ level: 'silent' }) })
const sign = (key: Uint8Array, kid: string) => new SignJWT({ roles: ['admin'] }).setProtectedHeader({ alg: 'HS256', kid }).setSubject('ops').setIssuedAt().setExpirationTime('5m').sign(key)

describe('control plane --auth-jwks with symmetric keys', () => {
  let cp: Awaited<ReturnType<typeof startControlPlane>> | undefined
  afterAll(async () => {
    await cp?.close()
  })

  it('verifies HS256 admin tokens by kid; another secret is a 401', async () => {
    const jwks = join(dir, 'jwks.json')
    writeFileSync(jwks, JSON.stringify({ keys: [{ kty: 'oct', kid: 'ops', alg: 'HS256', use: 'sig', k: SECRET.toString('base64url') }] }))
    cp = await start(jwks)
    const get = async (token: string) => {
      const r = await request(`${cp!.url}/v1/tenants`, { headers: { authorization: `Bearer ${token}` } })
      await r.body.dump()
      return r.statusCode
    }
    expect(await get(await sign(SECRET, 'ops'))).toBe(200)
    expect(await get(await sign(Buffer.from('another-secret-that-is-also-32-bytes-long!!'), 'ops'))).toBe(401)
  })

  it('a key too short stops the start, naming the file, never quoting the secret', async () => {
    const jwks = join(dir, 'short.json')
    writeFileSync(jwks, JSON.stringify({ keys: [{ kty: 'oct', kid: 'short', k: Buffer.from('tiny-secret').toString('base64url') }] }))
    const err = await start(jwks).then(
      (c) => {
        void c.close()
        return undefined
      },
      (e: Error) => e,
    )
    expect(err?.message).toContain(jwks)
    expect(err?.message).toMatch(/too short/)
    expect(err?.message).not.toContain(Buffer.from('tiny-secret').toString('base64url'))
  })
})
