// GET /v1/proxies after a proxy falls back at boot: the head is NACKed and the proxy runs its
// last-known-good (or its --upstream fallback). The row must show the version it actually runs
// beside the NACK (as xDS reports `version_info` beside `error_detail`): it used to keep whatever
// it held from an earlier life, or nothing at all for a new proxy, until the next ACK.
import { cpSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ProxyFleet, runningVersion, type ProxyRow } from '../helpers/control-plane.ts'
import { waitUntil } from '../helpers/wait.ts'

const fleet = new ProxyFleet('fallback28v')
const state1 = join(fleet.work, 'state-1')

beforeAll(() => fleet.start())

afterAll(() => fleet.close())

describe('the fleet view after a fallback at boot', () => {
  let good = 0
  let bad = 0

  beforeAll(async () => {
    const p1 = await fleet.proxy('fb-1', state1)
    good = await fleet.commitTenant('initech')
    await waitUntil(async () => (await fleet.row('fb-1'))?.appliedVersion === good, 10_000, 'the ACK of the good version')
    await p1.stop()
    // Schema-valid on the control plane, but no proxy can start with it (the key file is missing).
    const r = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({ jwt: { publicKeyFile: '/nonexistent/igw-28v.pem' } }) })
    bad = ((await r.json()) as { version: number }).version
    expect(bad).toBeGreaterThan(good)
  })

  it('a new proxy booting from a last-known-good shows that version as applied, beside the NACK of the head', async () => {
    const state2 = join(fleet.work, 'state-2')
    mkdirSync(state2)
    cpSync(join(state1, 'last-good.json'), join(state2, 'last-good.json'))
    const p2 = await fleet.proxy('fb-2', state2)
    expect(await runningVersion(p2)).toBe(good)
    await waitUntil(async () => (await fleet.row('fb-2'))?.lastNack?.version === bad, 10_000, 'the boot NACK of the head')
    await waitUntil(async () => (await fleet.row('fb-2'))?.appliedVersion === good, 5_000, `appliedVersion ${good} (the last-known-good it runs)`)
    expect((await fleet.row('fb-2'))!.lastNack!.version).toBe(bad)
  })

  it('a proxy that falls back to --upstream runs no control plane version: the row does not keep the one of its earlier life', async () => {
    // Same id as before (its row says it applied `good`), a fresh state dir: no last-known-good.
    const p = await fleet.proxy('fb-1', join(fleet.work, 'state-1b'), { extraArgs: ['--upstream', fleet.backendUrl] })
    expect(p.output.join('\n')).toMatch(/starting from --config\/--upstream/)
    await waitUntil(async () => (await fleet.row('fb-1'))?.lastNack?.version === bad, 10_000, 'the boot NACK of the head')
    const row = (await fleet.row('fb-1')) as ProxyRow & { ackedAt: string | null }
    expect(row.connected).toBe(true)
    expect(row.appliedVersion).toBeNull()
    expect(row.ackedAt).toBeNull()
  })
})
