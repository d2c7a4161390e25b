// A boolean flag's "off" form wins over its environment twin: an image built with
// IGW_AUTH_REQUIRE_EXP=1 could not be run without the check for one deployment (parseArgs refused
// `--no-auth-require-exp` and `--auth-require-exp=false` as unknown/valued, exit 2), and a typo in
// the environment (`IGW_AUTH_REQUIRE_EXP=ture`) silently meant "off".
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { afterAll, describe, expect, it } from 'vitest'
import { runControlPlane } from '../../control-plane/cli.ts'
import { parseFlags } from '../../proxy/cli.ts'

const SECRET = 'a-test-secret-that-is-long-enough-for-hs256!'
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

/** An admin token with no `exp` claim. */
const noExpToken = () => new SignJWT({ roles: ['admin'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('ops').setIssuedAt().sign(new TextEncoder().encode(SECRET))

describe('boolean flags against their environment twin', () => {
  it('parses --no-X, --X=false and --X=true; the flag wins over the env; a bad word is an error', () => {
    const on = { IGW_AUTH_REQUIRE_EXP: '1' }
    expect(parseFlags(['control-plane'], on).flags['auth-require-exp']).toBe(true)
    expect(parseFlags(['control-plane', '--no-auth-require-exp'], on).flags['auth-require-exp']).toBe(false)
    expect(parseFlags(['control-plane', '--auth-require-exp=false'], on).flags['auth-require-exp']).toBe(false)
    expect(parseFlags(['control-plane', '--auth-require-exp=off'], on).flags['auth-require-exp']).toBe(false)
    expect(parseFlags(['control-plane', '--auth-require-exp=true'], {}).flags['auth-require-exp']).toBe(true)
    expect(parseFlags(['control-plane', '--auth-require-exp'], {}).flags['auth-require-exp']).toBe(true)
    expect(parseFlags(['control-plane'], {}).flags['auth-require-exp']).toBe(false)
    expect(parseFlags(['control-plane'], { IGW_AUTH_REQUIRE_EXP: 'yes' }).flags['auth-require-exp']).toBe(true)
    expect(parseFlags(['control-plane'], { IGW_AUTH_REQUIRE_EXP: '' }).flags['auth-require-exp']).toBe(false)
    expect(() => parseFlags(['control-plane'], { IGW_AUTH_REQUIRE_EXP: 'ture' })).toThrow(/IGW_AUTH_REQUIRE_EXP: expected true or false, got "ture"/)
    expect(() => parseFlags(['control-plane', '--auth-require-exp=maybe'], {})).toThrow(/--auth-require-exp: expected true or false, got "maybe"/)
    // a string flag's `=value` is untouched
    expect(parseFlags(['proxy', '--upstream=http://127.0.0.1:4000'], {}).flags.upstream).toBe('http://127.0.0.1:4000')
  })

  it('a control plane started with IGW_AUTH_REQUIRE_EXP=1 and --no-auth-require-exp accepts a token without exp', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-bool17-'))
    dirs.push(dir)
    const env = { IGW_AUTH_REQUIRE_EXP: '1' }
    const base = ['control-plane', '--db', `sqlite:${join(dir, 'igw.db')}`, '--listen', '127.0.0.1:0', '--metrics-listen', 'off', '--auth-secret', SECRET, '--log-level', 'silent']
    const token = await noExpToken()
    const get = async (url: string) => {
      const r = await fetch(`${url}/v1/audit`, { headers: { authorization: `Bearer ${token}` } })
      return `${r.status} ${r.status === 200 ? "" : await r.text()}`.trim()
    }

    const strict = await runControlPlane(parseFlags(base, env).flags)
    try {
      expect(await get(strict.url)).toMatch(/^401 /)
    } finally {
      await strict.close()
    }
    const relaxed = await runControlPlane(parseFlags([...base, '--no-auth-require-exp'], env).flags)
    try {
      expect(await get(relaxed.url)).toBe("200")
    } finally {
      await relaxed.close()
    }
  })
})
