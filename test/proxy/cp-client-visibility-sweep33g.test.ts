// Operator visibility of a proxy started with --control-plane, sweep 33g. Real control planes
// (SQLite), real `igw proxy` processes.
//  - A proxy that started on its --upstream fallback (the control plane had no version) ran as
//    "version 1": /readyz, /config and igw_config_version said 1, the same as the control plane's
//    real version 1 once committed, so neither an operator nor an alert could tell them apart.
//    /readyz and /config now say the config's `source`, and the gauge is 0 on the fallback.
//  - A damaged last-good.json was skipped without a word when the head arrived at boot, and then
//    overwritten: the operator never learned their outage fallback had been broken, nor how.
//  - The "could not send ACK/NACK" line did not say when the answer is tried again (with a
//    Retry-After honoured that may be minutes away).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { connectedProxyArgs, connectedProxyEnv, metricSample, ProxyFleet, seedDocument, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

type Line = { msg?: string; path?: string; error?: string; version?: number; answer?: string; status?: number; retryInMs?: number }

function lines(p: SpawnedIgw): Line[] {
  return p.output.flatMap((l) => {
    try {
      return [JSON.parse(l) as Line]
    } catch {
      return []
    }
  })
}

async function admin(p: SpawnedIgw): Promise<{ readyz: { version: number; source?: string }; config: { version: number; source?: string }; gauge: number | undefined }> {
  const readyz = (await (await fetch(`${p.adminUrl}/readyz`)).json()) as { version: number; source?: string }
  const config = (await (await fetch(`${p.adminUrl}/config`)).json()) as { version: number; source?: string }
  const gauge = metricSample(await (await fetch(`${p.adminUrl}/metrics`)).text(), 'igw_config_version')
  return { readyz: { version: readyz.version, source: readyz.source }, config: { version: config.version, source: config.source }, gauge }
}

describe('a proxy on its --upstream fallback', () => {
  let cp: TestControlPlane
  let backend: DemoBackend
  const spawned: SpawnedIgw[] = []
  beforeAll(async () => {
    backend = await startDemoBackend()
    cp = await startTestControlPlane({ seed: null })
  })
  afterAll(async () => {
    for (const p of spawned) await p.stop()
    await cp?.close()
    await backend?.close()
  })

  it('says so in /readyz and /config, and igw_config_version is 0 until the control plane version 1 applies', async () => {
    const keyFile = join(cp.dir, 'cp.pub.pem')
    writeFileSync(keyFile, cp.store.key.publicKeyPem)
    const stateDir = join(cp.dir, 'fb33g')
    const p = await spawnIgw([...connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir, id: 'fb33g' }), '--upstream', backend.url], await connectedProxyEnv('proxy-fb33g'))
    spawned.push(p)
    const before = await admin(p)
    expect(before.readyz).toEqual({ version: 1, source: 'fallback' })
    expect(before.config).toEqual({ version: 1, source: 'fallback' })
    expect(before.gauge).toBe(0)

    // The control plane's own version 1: now the proxy runs it, and says so.
    const put = await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify(seedDocument(backend.url)) })
    expect(put.status).toBeLessThan(300)
    await expect.poll(async () => (await admin(p)).config.source, { timeout: 30_000, interval: 200 }).toBe('control-plane')
    const after = await admin(p)
    expect(after.readyz).toEqual({ version: 1, source: 'control-plane' })
    expect(after.config).toEqual({ version: 1, source: 'control-plane' })
    expect(after.gauge).toBe(1)
  }, 90_000)

  it('a proxy without a control plane says `file`', async () => {
    const p = await spawnIgw(['proxy', '--upstream', backend.url, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'])
    spawned.push(p)
    const a = await admin(p)
    expect(a.readyz).toEqual({ version: 1, source: 'file' })
    expect(a.config).toEqual({ version: 1, source: 'file' })
    expect(a.gauge).toBe(1)
  }, 60_000)
})

describe('a damaged last-good.json when the head arrives at boot', () => {
  const fleet = new ProxyFleet('lkg33g')
  let p: SpawnedIgw
  beforeAll(async () => {
    await fleet.start()
  }, 60_000)
  afterAll(async () => {
    await fleet.close()
  })

  it('is named in one warning saying what is wrong, then replaced by the head', async () => {
    const stateDir = join(fleet.work, 'lkg33g')
    mkdirSync(stateDir)
    const path = join(stateDir, 'last-good.json')
    writeFileSync(path, '{"keyId":"abc","signature":"xyz","payload":"{\\"vers')
    p = await fleet.proxy('lkg33g', stateDir)
    const warned = () => lines(p).filter((l) => l.msg?.includes('last-known-good snapshot on disk is not usable') === true)
    await expect.poll(() => warned().length, { timeout: 20_000 }).toBe(1)
    expect(warned()[0]).toMatchObject({ path })
    expect(warned()[0]!.error).toMatch(/last-good\.json is truncated/)
    expect((await admin(p)).config).toEqual({ version: 1, source: 'control-plane' })
    await expect.poll(() => (JSON.parse(readFileSync(path, 'utf8')) as { payload?: string }).payload !== undefined, { timeout: 20_000 }).toBe(true)
    await new Promise((r) => setTimeout(r, 500))
    expect(warned().length).toBe(1)
  }, 60_000)
})

describe('an ACK the control plane refuses', () => {
  const fleet = new ProxyFleet('ack33g')
  let p: SpawnedIgw
  let tokenFile: string
  beforeAll(async () => {
    await fleet.start()
    tokenFile = join(fleet.work, 'token')
    writeFileSync(tokenFile, `${await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-ack33g', roles: ['proxy'] })}\n`)
    const stateDir = join(fleet.work, 'ack33g')
    mkdirSync(stateDir)
    p = await spawnIgw([...connectedProxyArgs({ cpUrl: fleet.cpUrl, keyFile: fleet.keyFile, stateDir, id: 'ack33g' }), '--control-plane-token-file', tokenFile], { IGW_CONTROL_PLANE_TOKEN: '', IGW_USAGE_INTERVAL_MS: '60000' })
  }, 60_000)
  afterAll(async () => {
    await p?.stop()
    await fleet.close()
  })

  it('is logged with when it is tried again (retryInMs)', async () => {
    await expect.poll(async () => (await fleet.row('ack33g'))?.appliedVersion, { timeout: 30_000, interval: 200 }).toBe(1)
    // Rotated to a token without the proxy role: the open stream delivers the next version, its ACK gets 403.
    writeFileSync(tokenFile, `${await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-ack33g', roles: ['viewer'] })}\n`)
    const v = await fleet.commitTenant('ack33g')
    const failed = () => lines(p).find((l) => l.msg?.startsWith('could not send ACK/NACK') === true)
    await expect.poll(failed, { timeout: 20_000 }).toMatchObject({ version: v, answer: 'ACK', status: 403 })
    // The first retry: 1 s with equal jitter (no Retry-After on a 403).
    expect(failed()!.retryInMs).toBeGreaterThanOrEqual(500)
    expect(failed()!.retryInMs).toBeLessThanOrEqual(1_000)
  }, 60_000)
})
