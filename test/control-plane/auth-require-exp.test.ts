// `--auth-require-exp` (IGW_AUTH_REQUIRE_EXP): an admin token without `exp` never expires, so it
// cannot be retired by time; a control plane that requires one refuses it with a precise 401.
import { SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { AuthError, Authenticator } from '../../control-plane/auth.ts'
import { authOptions } from '../../control-plane/cli.ts'
import { parseFlags } from '../../proxy/cli.ts'
import { startTestControlPlane, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'

const key = new TextEncoder().encode(TEST_AUTH_SECRET)
const forever = () => new SignJWT({ roles: ['admin'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('ops').setIssuedAt().sign(key)
const hourly = () => new SignJWT({ roles: ['admin'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('ops').setIssuedAt().setExpirationTime('1h').sign(key)

describe('requiring an exp claim on control plane tokens', () => {
  it('the flag and its environment twin turn it on; off by default', () => {
    expect(authOptions(parseFlags(['control-plane', '--auth-secret', TEST_AUTH_SECRET, '--auth-require-exp'], {}).flags).requireExpiration).toBe(true)
    expect(authOptions(parseFlags(['control-plane'], { IGW_AUTH_SECRET: TEST_AUTH_SECRET, IGW_AUTH_REQUIRE_EXP: 'true' }).flags).requireExpiration).toBe(true)
    expect(authOptions(parseFlags(['control-plane'], { IGW_AUTH_SECRET: TEST_AUTH_SECRET, IGW_AUTH_REQUIRE_EXP: 'no' }).flags).requireExpiration).toBeUndefined()
    expect(authOptions(parseFlags(['control-plane'], { IGW_AUTH_SECRET: TEST_AUTH_SECRET }).flags).requireExpiration).toBeUndefined()
  })

  it('with it, a token without exp is a 401 naming the claim; with exp it passes; without it both pass', async () => {
    const strict = new Authenticator({ secret: TEST_AUTH_SECRET, requireExpiration: true })
    const err = await strict.authenticate(`Bearer ${await forever()}`).then(() => undefined, (e: unknown) => e)
    expect(err).toBeInstanceOf(AuthError)
    expect([(err as AuthError).status, (err as AuthError).message]).toEqual([401, 'token has no "exp" claim, which this control plane requires (--auth-require-exp)'])
    expect((await strict.authenticate(`Bearer ${await hourly()}`)).sub).toBe('ops')
    const lax = new Authenticator({ secret: TEST_AUTH_SECRET })
    expect((await lax.authenticate(`Bearer ${await forever()}`)).sub).toBe('ops')
  })

  it('a running control plane: the default accepts a token without exp (documented), as before', async () => {
    const cp = await startTestControlPlane()
    try {
      const res = await cp.api('/v1/tenants', { token: await forever() })
      expect(res.status).toBe(200)
    } finally {
      await cp.close()
    }
  })
})
