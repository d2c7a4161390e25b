// The config stream's end at token expiry, sweep 23d:
//  - The control plane ended a stream whose token was no longer accepted without a word: no log
//    line, no count, so an operator could not tell why the fleet reconnected. The hub now reports
//    it (onExpired; the control plane counts it under igw_control_plane_stream_drops_total with
//    reason="token_expired", a series present from the start at 0).
//  - A proxy whose stream opened less than a minute before its token's end counted that end as a
//    "quick end", and warned that another proxy probably used the same proxy id. It now says the
//    token expired, and does not count it toward the duplicate-id backoff.
//  - Every proxy given a token of the same lifetime is ended at the same instant, and so is every
//    proxy of a control plane that shuts down (it now says so first: `event: shutdown`): the
//    reconnect after such an end is spread with full jitter over 0..5 s, not 125..250 ms.
// Real control plane (SQLite, HTTP), real PushHub behind a real HTTP server, the real client.
import { mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { openDb } from '../../control-plane/db.ts'
import { migrate } from '../../control-plane/migrations.ts'
import { PushHub } from '../../control-plane/push.ts'
import type { Head } from '../../control-plane/store.ts'
import { ControlPlaneClient, ReconnectPolicy } from '../../proxy/control-plane-client.ts'
import { metricSample, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
})
afterAll(async () => {
  await cp?.close()
})

/** A proxy token whose `exp` is `expInS` seconds from now (negative: past, still inside the 30 s tolerance). */
function proxyToken(sub: string, expInS: number): Promise<string> {
  return new SignJWT({ roles: ['proxy'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + expInS)
    .sign(new TextEncoder().encode(TEST_AUTH_SECRET))
}

it('a stream ended by its token expiry is reported by the hub; the drop reason is a series from the start', async () => {
  const text = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
  expect(metricSample(text, 'igw_control_plane_stream_drops_total', { reason: 'token_expired' })).toBe(0)

  const db = openDb(`sqlite:${join(mkdtempSync(join(tmpdir(), 'igw-expiry23d-')), 'igw.db')}`)
  await migrate(db)
  const expired: { proxyId: string; endsAt: number }[] = []
  const hub = new PushHub(db, { onExpired: (proxyId, endsAt) => expired.push({ proxyId, endsAt }) }, { heartbeatMs: 60_000 })
  const head: Head = { version: 3, document: {}, digest: 'd'.repeat(64), envelope: { payload: '{}', keyId: 'k', signature: 's' }, createdAt: Date.now(), author: 'test' }
  const endsAt = Date.now() + 300
  const server: Server = createServer((req, res) => void hub.open(res, new URL(req.url!, 'http://x').searchParams.get('proxy')!, 'host', undefined, 0, () => head, undefined, endsAt))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  try {
    const r = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/?proxy=expiring`, { signal: AbortSignal.timeout(5_000) })
    const body = await r.text() // ends when the token does
    expect(body).toContain(': token expired')
    expect(expired).toEqual([{ proxyId: 'expiring', endsAt }])
  } finally {
    await hub.close()
    await new Promise<void>((r) => server.close(() => r()))
    await db.close()
  }
})

it('a proxy whose token ends soon after its stream opened says the token expired, not "same proxy id"', async () => {
  let current = await proxyToken('short-lived-proxy', -28) // accepted ~2 s more
  const logs: { level: string; obj: Record<string, unknown>; msg: string }[] = []
  const c = new ControlPlaneClient({
    url: cp.url,
    token: () => current,
    proxyId: 'short-lived',
    stateDir: mkdtempSync(join(tmpdir(), 'igw-cp23d-')),
    toConfig: (doc) => doc as never,
    usageIntervalMs: 3_600_000,
    bootTimeoutMs: 10_000,
    log: (level, obj, msg) => logs.push({ level, obj, msg }),
  })
  try {
    await c.bootstrap()
    await expect.poll(() => cp.hub.connected, { timeout: 5_000 }).toBe(1)
    current = await proxyToken('short-lived-proxy', 3600)
    await expect.poll(() => logs.find((l) => l.msg.includes('ended the config stream')), { timeout: 8_000 }).toBeDefined()
    const end = logs.find((l) => l.msg.includes('ended the config stream'))!
    expect(end.msg).toContain('the token it was opened with expired')
    expect(end.level).toBe('info')
    expect(end.obj.retryInMs).toBeLessThanOrEqual(5_000)
    expect(logs.filter((l) => /same proxy id|soon after it opened/.test(l.msg))).toEqual([])
    // and the control plane counted why it ended the stream
    const drops = async () => metricSample(await (await fetch(`${cp.metricsUrl}/metrics`)).text(), 'igw_control_plane_stream_drops_total', { reason: 'token_expired' })
    await expect.poll(drops, { timeout: 5_000 }).toBe(1)
  } finally {
    await c.close()
  }
}, 20_000)

it('a control plane shutting down tells its proxies, which spread their reconnects', async () => {
  const other = await startTestControlPlane()
  const logs: { level: string; obj: Record<string, unknown>; msg: string }[] = []
  const c = new ControlPlaneClient({
    url: other.url,
    token: await other.token({ sub: 'leaving-proxy', roles: ['proxy'] }),
    proxyId: 'leaving',
    stateDir: mkdtempSync(join(tmpdir(), 'igw-cp23d-')),
    toConfig: (doc) => doc as never,
    usageIntervalMs: 3_600_000,
    bootTimeoutMs: 10_000,
    log: (level, obj, msg) => logs.push({ level, obj, msg }),
  })
  try {
    await c.bootstrap()
    await expect.poll(() => other.hub.connected, { timeout: 5_000 }).toBe(1)
  } finally {
    await other.close()
  }
  try {
    await expect.poll(() => logs.find((l) => l.msg.includes('ended the config stream')), { timeout: 5_000 }).toBeDefined()
    const end = logs.find((l) => l.msg.includes('ended the config stream'))!
    expect(end.msg).toContain('it is shutting down')
    expect(end.obj.retryInMs).toBeLessThanOrEqual(5_000)
  } finally {
    await c.close()
  }
})

it('the reconnect after a fleet-wide end (token expiry, shutdown) is full jitter up to the failure cap, and no quick end', () => {
  expect(new ReconnectPolicy(undefined, () => 0).fleetEnded()).toBe(0)
  expect(new ReconnectPolicy(undefined, () => 0.999999).fleetEnded()).toBe(5_000)
  const r = new ReconnectPolicy(undefined, () => 0.5)
  expect(r.fleetEnded()).toBe(2_500)
  expect(r.fleetEnded()).toBe(2_500)
  // The next quick end is the first of a row: the expiries said nothing about a twin.
  expect(r.ended(100)).toMatchObject({ quick: true, quickEnds: 1 })
})
