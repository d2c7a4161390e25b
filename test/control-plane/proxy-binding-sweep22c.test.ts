// A proxy token with a `proxy` claim acts as that proxy only. Any proxy token could post usage
// reports under any proxy id: counts landed on another proxy's tenants' statements, and a forged
// report with the victim's boot and a high seq made its real reports "duplicates" (dropped). It
// could also ACK for another proxy or take over its config stream. Now a 403, audited; a token
// without the claim (one token shared by a fleet) is unchanged. Real control plane on SQLite.
import { rmSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'

describe('proxy tokens bound to a proxy id', () => {
  let cp: TestControlPlane
  let boundToA: string
  beforeAll(async () => {
    cp = await startTestControlPlane()
    boundToA = await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-a', roles: ['proxy'], proxy: 'a' })
  })
  afterAll(async () => {
    await cp?.close()
    if (cp) rmSync(cp.dir, { recursive: true, force: true })
  })

  const report = (proxyId: string, seq: number, requests: number) =>
    JSON.stringify({ proxyId, bootId: `boot-${proxyId}`, seq, at: new Date().toISOString(), tenants: { acme: { requests } } })

  async function acmeRequests(): Promise<number> {
    const day = new Date().toISOString().slice(0, 10)
    const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)
    const r = await cp.api(`/v1/tenants/acme/statement?from=${yesterday}&to=${day}`)
    expect(r.status).toBe(200)
    return ((await r.json()) as { totals: { requests: number } }).totals.requests
  }

  it('refuses a usage report under another proxy id (403, audited) and keeps the real proxy counted', async () => {
    const forged = await cp.api('/v1/usage', { method: 'POST', token: boundToA, body: report('b', 1_000_000, 500) })
    expect(forged.status).toBe(403)
    expect(((await forged.json()) as { detail?: string; title?: string }).detail ?? '').toMatch(/bound to proxy "a"/)
    expect(await acmeRequests()).toBe(0)
    // The victim's own report (seq 1 of the boot the forger named) is counted, not a "duplicate".
    const unbound = await mintToken(TEST_AUTH_SECRET, { sub: 'fleet', roles: ['proxy'] })
    const real = await cp.api('/v1/usage', { method: 'POST', token: unbound, body: report('b', 1, 3) })
    expect(real.status).toBe(200)
    expect(((await real.json()) as { accepted: boolean }).accepted).toBe(true)
    // Its own id: accepted.
    const own = await cp.api('/v1/usage', { method: 'POST', token: boundToA, body: report('a', 1, 2) })
    expect(own.status).toBe(200)
    expect(await acmeRequests()).toBe(5)
    const audit = await cp.api('/v1/audit?resource=proxies/b')
    const items = ((await audit.json()) as { items: { actor: string; action: string; after: { boundTo?: string } }[] }).items
    expect(items).toEqual([expect.objectContaining({ actor: 'proxy-a', action: 'proxy.sync.denied', after: expect.objectContaining({ boundTo: 'a' }) })])
  })

  it('refuses an ACK and a config stream as another proxy; its own stream opens', async () => {
    const ack = await cp.api('/v1/proxies/b/ack', { method: 'POST', token: boundToA, body: JSON.stringify({ version: 1, status: 'NACK', error: 'forged' }) })
    expect(ack.status).toBe(403)
    await ack.body?.cancel()
    const other = await fetch(`${cp.url}/v1/stream?proxy=b&version=0`, { headers: { authorization: `Bearer ${boundToA}` } })
    expect(other.status).toBe(403)
    await other.body?.cancel()
    const ac = new AbortController()
    const own = await fetch(`${cp.url}/v1/stream?proxy=a&version=0`, { headers: { authorization: `Bearer ${boundToA}` }, signal: ac.signal })
    expect(own.status).toBe(200)
    ac.abort()
    await own.body?.cancel().catch(() => undefined)
  })

  it('refuses a token whose proxy claim is not a non-empty string (401), rather than leave it unbound', async () => {
    const bad = await mintToken(TEST_AUTH_SECRET, { sub: 'p', roles: ['proxy'], proxy: 7 as unknown as string })
    const r = await cp.api('/v1/usage', { method: 'POST', token: bad, body: report('anything', 1, 1) })
    expect(r.status).toBe(401)
    await r.body?.cancel()
  })
})
