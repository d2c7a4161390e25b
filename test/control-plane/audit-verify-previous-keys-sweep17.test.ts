// After the documented signing-key replacement, `igw control-plane --previous-keys old.pem`
// (IGW_PREVIOUS_KEYS) lets GET /v1/audit/verify check the older entries with the key that signed
// them, as `igw audit verify --previous-keys` does. It used to know only the instance's own key
// and reported every older entry as signed by an unknown key (ok: false) with no way out.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { runControlPlane } from '../../control-plane/cli.ts'
import { ConfigError } from '../../config/load.ts'
import { parseFlags } from '../../proxy/cli.ts'
import { startTestControlPlane, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

interface Verify {
  ok: boolean
  entries: number
  problems: { seq: number; problem: string }[]
}

describe('GET /v1/audit/verify across a signing key replacement', () => {
  it('--previous-keys / IGW_PREVIOUS_KEYS: older entries verify with the key that signed them', async () => {
    const a = mkdtempSync(join(tmpdir(), 'igw-apk17-a-'))
    const b = mkdtempSync(join(tmpdir(), 'igw-apk17-b-'))
    dirs.push(a, b)
    const first = await startTestControlPlane({ dir: a })
    const oldKeyId = first.store.key.keyId
    expect((await first.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
    await first.close()
    const newKey = join(b, 'signing-key.pem')
    const admin = await mintToken(TEST_AUTH_SECRET, { sub: 'admin', roles: ['admin'] })
    const base = ['control-plane', '--db', first.dbSpec, '--signing-key', newKey, '--listen', '127.0.0.1:0', '--metrics-listen', 'off', '--auth-secret', TEST_AUTH_SECRET, '--log-level', 'silent']
    const verify = async (url: string): Promise<Verify> => {
      const r = await fetch(`${url}/v1/audit/verify`, { headers: { authorization: `Bearer ${admin}` } })
      expect(r.status).toBe(200)
      return (await r.json()) as Verify
    }

    // The key replaced, started as `igw control-plane` is: without the old key, the older entries are named.
    const without = await runControlPlane(parseFlags(base, {}).flags)
    try {
      expect((await fetch(`${without.url}/v1/tenants/hooli`, { method: 'PUT', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ tier: 'bronze' }) })).status).toBe(201)
      const r = await verify(without.url)
      expect(r.ok).toBe(false)
      expect(r.problems.length).toBeGreaterThan(0)
      expect(r.problems[0]!.problem).toContain(oldKeyId)
    } finally {
      await without.close()
    }

    // With the flag: every entry verifies.
    const withFlag = await runControlPlane(parseFlags([...base, '--previous-keys', join(a, 'signing-key.pem')], {}).flags)
    try {
      const r = await verify(withFlag.url)
      expect(r.problems).toEqual([])
      expect(r.ok).toBe(true)
      expect(r.entries).toBeGreaterThanOrEqual(3)
    } finally {
      await withFlag.close()
    }

    // With the environment twin, a list with blanks in it.
    const withEnv = await runControlPlane(parseFlags(base, { IGW_PREVIOUS_KEYS: ` ${join(a, 'signing-key.pem')} , ` }).flags)
    try {
      expect((await verify(withEnv.url)).ok).toBe(true)
    } finally {
      await withEnv.close()
    }

    // A file that is not a key stops the start, naming the flag and the file.
    const missing = join(a, 'nope.pem')
    const err = await runControlPlane(parseFlags([...base, '--previous-keys', missing], {}).flags).then(
      (cp) => cp.close().then(() => undefined),
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(ConfigError)
    expect(String((err as ConfigError).message)).toContain('--previous-keys')
    expect(JSON.stringify((err as ConfigError).problems)).toContain(missing)
  }, 60_000)
})
