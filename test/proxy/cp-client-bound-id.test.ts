// A proxy token bound to one proxy id (its `proxy` claim: the control plane refuses any other id
// with 403) gives the proxy its default id, so a bound token works without --proxy-id; an
// explicit --proxy-id still wins, and a token that names no usable id leaves the stored default.
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'

const SECRET = 'cp-client-bound-id-secret-0123456789'
const made: ControlPlaneClient[] = []

function client(token: string | (() => string), proxyId?: string): ControlPlaneClient {
  const { publicKey } = generateKeyPairSync('ed25519')
  const c = new ControlPlaneClient({
    url: 'http://127.0.0.1:9', // never contacted: bootstrap() is not called
    token,
    stateDir: mkdtempSync(join(tmpdir(), 'igw-cp-bound-')),
    ...(proxyId !== undefined ? { proxyId } : {}),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    toConfig: (doc) => doc as never,
    usageIntervalMs: 3_600_000,
    log: () => {},
  })
  made.push(c)
  return c
}

afterEach(async () => {
  for (const c of made.splice(0)) await c.close()
})

describe('the default proxy id of a bound token', () => {
  it('is the token\'s proxy claim (a token given inline, or read from a file)', async () => {
    const token = await mintToken(SECRET, { sub: 'edge', roles: ['proxy'], proxy: 'edge-eu-1' })
    expect(client(token).proxyId).toBe('edge-eu-1')
    const file = join(mkdtempSync(join(tmpdir(), 'igw-cp-bound-tok-')), 'token')
    writeFileSync(file, `${token}\n`)
    const { readFileSync } = await import('node:fs')
    expect(client(() => readFileSync(file, 'utf8')).proxyId).toBe('edge-eu-1')
  })

  it('an explicit proxy id wins over the claim', async () => {
    const token = await mintToken(SECRET, { sub: 'edge', roles: ['proxy'], proxy: 'edge-eu-1' })
    expect(client(token, 'other-1').proxyId).toBe('other-1')
  })

  it('without a usable claim the stored host-based id is kept', async () => {
    const unbound = await mintToken(SECRET, { sub: 'edge', roles: ['proxy'] })
    const bad = await mintToken(SECRET, { sub: 'edge', roles: ['proxy'], proxy: 'has a space' })
    for (const token of [unbound, bad, 'opaque-not-a-jwt', () => { throw new Error('no file yet') }]) {
      expect(client(token).proxyId.startsWith(`${hostname()}-`)).toBe(true)
    }
  })
})
