// The config stream, sweep 22j:
//  - It was authorized once, when it opened, and then ran for as long as the connection lived: a
//    proxy token that expired (or was retired by not renewing it) kept getting every new config.
//    Now the stream ends when the token stops being accepted (`exp` plus the 30 s clock tolerance);
//    the proxy's client reconnects with the token it holds then (a rotated token file), and the
//    expired one is refused.
//  - `boot` and `hostname` were stored in the proxy's row at any length; now capped with a 400,
//    `boot` at the length usage reports allow for a boot id.
// Real control plane on SQLite, real HTTP, the real proxy-side client.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startTestControlPlane, TEST_AUTH_SECRET, type ProxyRow, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

let cp: TestControlPlane
let oa: Conformance
beforeAll(async () => {
  cp = await startTestControlPlane()
  oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
})
afterAll(async () => {
  await cp?.close()
})

/** A proxy token whose `exp` is `expInS` seconds from now (negative: already past, still inside the 30 s tolerance). */
function proxyToken(sub: string, expInS: number): Promise<string> {
  return new SignJWT({ roles: ['proxy'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + expInS)
    .sign(new TextEncoder().encode(TEST_AUTH_SECRET))
}

const row = async (id: string) => ((await (await cp.api('/v1/proxies')).json()) as { items: ProxyRow[] }).items.find((i) => i.id === id)

it('ends a stream when its token stops being accepted; the same token is then refused', async () => {
  // Accepted for about 2 s more: 28 s past its exp, inside the 30 s tolerance.
  const token = await proxyToken('expiring-proxy', -28)
  const ac = new AbortController()
  try {
    const r = await cp.api('/v1/stream?proxy=expiring&version=0', { token, signal: ac.signal })
    expect(r.status).toBe(200)
    const reader = r.body!.getReader()
    let text = ''
    let ended = false
    const reading = (async () => {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        text += new TextDecoder().decode(value)
      }
      ended = true
    })()
    await expect.poll(() => text, { timeout: 5_000 }).toContain('event: snapshot')
    // A clean end of the body (the proxy's client reconnects on that), not a broken connection.
    await expect.poll(() => ended, { timeout: 8_000 }).toBe(true)
    await reading
    expect(text).toContain(': token expired')
    await expect.poll(async () => (await row('expiring'))?.connected, { timeout: 5_000 }).toBe(false)
    expect(cp.hub.connected).toBe(0)
    const again = await cp.api('/v1/stream?proxy=expiring&version=0', { token })
    expect(await oa.check(again, 'GET', '/v1/stream')).toMatchObject({ status: 401, detail: 'token expired' })
  } finally {
    ac.abort()
  }
}, 20_000)

it('the proxy client reconnects with its rotated token', async () => {
  const old = await proxyToken('rotating-proxy', -28)
  const fresh = await proxyToken('rotating-proxy', 3600)
  let current = old
  const logs: string[] = []
  const c = new ControlPlaneClient({
    url: cp.url,
    token: () => current,
    proxyId: 'rotating',
    stateDir: mkdtempSync(join(tmpdir(), 'igw-cp22j-')),
    toConfig: (doc) => doc as never,
    usageIntervalMs: 3_600_000,
    bootTimeoutMs: 10_000,
    log: (_l, _o, m) => logs.push(m),
  })
  try {
    await c.bootstrap()
    await expect.poll(() => cp.hub.connected, { timeout: 5_000 }).toBe(1)
    // The token file was rotated; the stream opened with the old token ends at its expiry.
    current = fresh
    await expect.poll(() => logs.filter((m) => m.includes('ended the config stream')).length, { timeout: 8_000 }).toBeGreaterThan(0)
    // Reconnected with the token it holds now (the old one is refused by then).
    await expect.poll(() => cp.hub.connected, { timeout: 10_000 }).toBe(1)
    expect((await row('rotating'))?.connected).toBe(true)
    expect(logs.some((m) => m.includes('refused'))).toBe(false)
  } finally {
    await c.close()
  }
}, 30_000)

it('refuses a boot id or hostname longer than it stores, before the stream opens', async () => {
  const token = await cp.token({ sub: 'long-params', roles: ['proxy'] })
  // Bounded: a stream opened instead would never end.
  const signal = AbortSignal.timeout(5_000)
  const long = await cp.api(`/v1/stream?proxy=long-boot&boot=${'b'.repeat(201)}`, { token, signal })
  expect(await oa.check(long, 'GET', '/v1/stream')).toMatchObject({ status: 400, problems: ['boot: expected at most 200 characters, got 201'] })
  const host = await cp.api(`/v1/stream?proxy=long-host&hostname=${'h'.repeat(256)}`, { token, signal })
  expect(await oa.check(host, 'GET', '/v1/stream')).toMatchObject({ status: 400, problems: ['hostname: expected at most 255 characters, got 256'] })
  expect(await row('long-boot')).toBeUndefined()
  expect(await row('long-host')).toBeUndefined()
  // At the limits: a stream.
  const ac = new AbortController()
  try {
    const ok = await cp.api(`/v1/stream?proxy=at-limits&boot=${'b'.repeat(200)}&hostname=${'h'.repeat(255)}`, { token, signal: ac.signal })
    expect(ok.status).toBe(200)
    expect(((await row('at-limits')) as (ProxyRow & { hostname: string | null }) | undefined)?.hostname).toBe('h'.repeat(255))
  } finally {
    ac.abort()
  }
})
