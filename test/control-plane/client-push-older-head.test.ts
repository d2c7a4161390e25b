// A control plane whose head is OLDER than what the proxies applied (its database wiped or
// restored from a backup, same signing key). Versions only move forward on a proxy (an old signed
// snapshot must not be replayable), so the older head is refused — but visibly: NACKed with the
// reason (lastNack in GET /v1/proxies), warned once per version; and a proxy restarted at that
// moment boots from its newer last-known-good instead of the older head, so the fleet stays on
// one version. The way out (commit until the head passes the fleet's version) then reaches all.
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ProxyFleet, runningVersion } from '../helpers/control-plane.ts'
import type { SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const fleet = new ProxyFleet('older')
const row = (id: string) => fleet.row(id)
const commitTenant = (name: string) => fleet.commitTenant(name)
const query = (p: SpawnedIgw, tenant: string) =>
  fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query: '{ hello(name: "older") }' }) })
const logLines = (p: SpawnedIgw) =>
  p.output.flatMap((l) => {
    try {
      return [JSON.parse(l) as { level: string; msg: string; version?: number }]
    } catch {
      return []
    }
  })
/** Restart the control plane (same database); resolves when `id` has reconnected and NACKed `version` anew. */
async function restartCpAndWaitForNack(id: string, version: number): Promise<void> {
  const before = (await row(id))?.lastNack?.at
  await fleet.stopCp()
  await fleet.startCp()
  await waitUntil(async () => {
    const r = await row(id)
    return r?.connected === true && r.lastNack?.version === version && r.lastNack.at !== before
  }, 15_000, `${id} to reconnect and NACK version ${version}`)
}
const lkgVersion = (stateDir: string) => (JSON.parse((JSON.parse(readFileSync(join(stateDir, 'last-good.json'), 'utf8')) as { payload: string }).payload) as { version: number }).version

beforeAll(() => fleet.start())

afterAll(() => fleet.close())

describe('a control plane whose head is older than what the proxies run', () => {
  const state1 = join(fleet.work, 'state-1')
  let p1: SpawnedIgw
  let fleetVersion = 0

  it('a running proxy NACKs the older head (again on every connect), keeps serving its version, and warns once per version', async () => {
    p1 = await fleet.proxy('older-1', state1)
    for (const t of ['t1', 't2', 't3', 't4', 't5']) fleetVersion = await commitTenant(t)
    expect(fleetVersion).toBe(6)
    await waitUntil(async () => (await row('older-1'))?.appliedVersion === fleetVersion, 10_000, 'the proxy to ACK version 6')
    // The database is wiped (the signing key file stays): the control plane comes back at version 1.
    await fleet.stopCp()
    for (const f of ['igw.db', 'igw.db-wal', 'igw.db-shm']) rmSync(join(fleet.cpDir, f), { force: true })
    await fleet.startCp()
    expect(fleet.cp!.store.head()!.version).toBe(1)
    await waitUntil(async () => (await row('older-1'))?.lastNack?.version === 1, 10_000, 'a NACK of the older head (version 1)')
    const view = (await row('older-1'))!
    expect(view.connected).toBe(true)
    expect(view.appliedVersion).toBe(fleetVersion)
    expect(view.lastNack!.error).toMatch(/older than version 6/)
    expect(await runningVersion(p1)).toBe(fleetVersion)
    // Visible in the log as a warning, once per version: the control plane restarts (same
    // database), the proxy reconnects and is told the head again, NACKs it again (lastNack stays
    // true), but does not warn about the same version twice.
    const warned = (v: number) => logLines(p1).filter((l) => l.level === 'warn' && l.version === v && /older/.test(l.msg)).length
    expect(warned(1)).toBe(1)
    await restartCpAndWaitForNack('older-1', 1)
    expect(warned(1)).toBe(1)
    // A version committed on the reset control plane is older too: pushed to the connected proxy
    // at once (the control plane sends every commit past its own head, whatever the proxy said it
    // runs), never applied, NACKed.
    const v2 = await commitTenant('newco')
    expect(v2).toBe(2)
    await waitUntil(async () => (await row('older-1'))?.lastNack?.version === 2, 10_000, 'a NACK of version 2 without a reconnect')
    expect((await row('older-1'))!.lastNack!.error).toMatch(/older than version 6/)
    expect(await runningVersion(p1)).toBe(fleetVersion)
    expect(warned(2)).toBe(1)
  })

  it('a proxy restarted meanwhile boots from its newer last-known-good, not the older head, and NACKs the head', async () => {
    const state2 = join(fleet.work, 'state-2')
    mkdirSync(state2)
    copyFileSync(join(state1, 'last-good.json'), join(state2, 'last-good.json'))
    const before = readFileSync(join(state2, 'last-good.json'), 'utf8')
    const p2 = await fleet.proxy('older-2', state2)
    expect(await runningVersion(p2)).toBe(fleetVersion)
    expect(p2.output.join('\n')).toMatch(/older than .*last-known-good/)
    expect(p2.output.join('\n')).toMatch(/booting from the last-known-good snapshot/)
    await waitUntil(async () => (await row('older-2'))?.lastNack?.version === 2, 10_000, 'the boot NACK of the older head')
    expect((await row('older-2'))!.lastNack!.error).toMatch(/older than version 6/)
    expect((await query(p2, 't5')).status).toBe(200)
    // The snapshot a later restart falls back to is still the newer one.
    expect(readFileSync(join(state2, 'last-good.json'), 'utf8')).toBe(before)

    // The way out: commit until the head passes the fleet's version; then every proxy takes it.
    let v = 0
    for (const t of ['u1', 'u2', 'u3', 'u4', 'u5']) v = await commitTenant(t)
    expect(v).toBeGreaterThan(fleetVersion)
    await waitUntil(async () => (await runningVersion(p1)) === v && (await runningVersion(p2)) === v, 10_000, 'both proxies on the new head')
    await waitUntil(async () => {
      const f = await fleet.rows()
      return f.items.filter((i) => i.id.startsWith('older-')).every((i) => i.appliedVersion === v)
    }, 10_000, 'both ACKs')
    expect(lkgVersion(state2)).toBe(v)
  })
})
