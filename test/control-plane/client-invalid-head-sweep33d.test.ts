// A head this proxy's schema refuses (a rolling upgrade: a newer control plane replica on the same
// database committed a filter this proxy's version does not know), sweep 33d. The proxy NACKs it
// and keeps serving. The control plane sends its head again on every reconnect (its own restarts,
// a token's expiry, a network break): each one logged the refusal at error level again and counted
// another refused document in igw_config_reload_failures_total — one version, many "failures",
// unlike a refused signature (once per version). Now once per version and reason; the NACK is
// still sent on every connect, so GET /v1/proxies keeps showing it.
// Real control plane (restarted on its SQLite file), real `igw proxy`, real graphql-yoga backend.
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { afterEach, describe, expect, it } from 'vitest'
import { canonicalJson, sha256Hex } from '../../config/canonical-json.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { signSnapshot } from '../../control-plane/snapshot.ts'
import { ProxyFleet, runningVersion, seedDocument } from '../helpers/control-plane.ts'
import type { SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

// One per run (a retried run starts afresh: the database holds the inserted version).
let fleet: ProxyFleet
afterEach(() => fleet?.close())

const failures = async (p: SpawnedIgw): Promise<number> => {
  const m = /^igw_config_reload_failures_total(?:\{[^}]*\})? (\d+)/m.exec(await (await fetch(`${p.adminUrl}/metrics`)).text())
  return m === null ? 0 : Number(m[1])
}
const lines = (p: SpawnedIgw, msg: string) => p.output.filter((l) => l.includes(`"msg":"${msg}"`)).length

/** What a newer replica commits: the head with a filter this proxy does not know, signed with the control plane's key. */
function commitFromNewerReplica(version: number): void {
  const doc = seedDocument(fleet.backendUrl) as { routes: { filters: unknown[] }[] }
  doc.routes[0]!.filters.push({ name: 'geo-fence', allow: ['EU'] })
  const json = canonicalJson(doc)
  const envelope = signSnapshot(loadOrCreateSigningKey(join(fleet.cpDir, 'signing-key.pem')), version, json)
  const db = new DatabaseSync(join(fleet.cpDir, 'igw.db'))
  try {
    db.prepare('INSERT INTO config_versions (version, document, digest, envelope, author, summary, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)').run(version, json, sha256Hex(json), JSON.stringify(envelope), 'newer-replica', 'config.put config', Date.now())
  } finally {
    db.close()
  }
}

describe('a head this proxy does not know how to validate', () => {
  it('is NACKed on every connect, but logged and counted once', async () => {
    fleet = new ProxyFleet('invalid33d')
    await fleet.start()
    const p = await fleet.proxy('skewed', join(fleet.work, 'state'))
    expect(await runningVersion(p)).toBe(1)
    const base = await failures(p)
    await fleet.stopCp()
    commitFromNewerReplica(2)
    await fleet.startCp()
    await waitUntil(async () => (await fleet.row('skewed'))?.lastNack?.version === 2, 20_000, 'the NACK of version 2')
    // Named (it said "unknown filter" and the list of known ones).
    expect((await fleet.row('skewed'))!.lastNack!.error).toMatch(/routes\[0\]\.filters\[2\]\.name: unknown filter, got "geo-fence"/)
    await waitUntil(async () => (await failures(p)) === base + 1, 10_000, 'one refusal counted')
    // A control plane restart: the proxy reconnects and is sent the head again. One is enough to
    // tell once-per-version from once-per-connect (each restart also costs the proxy's 0-5 s
    // reconnect jitter after a control plane shutdown; two of them proved nothing more).
    for (let i = 0; i < 1; i++) {
      const before = (await fleet.row('skewed'))!.lastNack!.at
      await fleet.stopCp()
      await fleet.startCp()
      await waitUntil(async () => {
        const r = await fleet.row('skewed')
        return r?.connected === true && r.lastNack?.version === 2 && r.lastNack.at !== before
      }, 20_000, `reconnect ${i + 1} and its NACK`)
    }
    // Old: 2 and 2 (one per connect).
    expect(await failures(p)).toBe(base + 1)
    expect(lines(p, 'config version NACKed: invalid here; keeping the running config')).toBe(1)
    // Still serving version 1 through the backend.
    expect(await runningVersion(p)).toBe(1)
    // connection: close: no idle keep-alive for the stop below to wait its drain grace (1 s) on.
    const r = await fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', connection: 'close' }, body: JSON.stringify({ query: '{ __typename }' }) })
    expect(r.status).toBe(200)
    // A restart while the head is still this version: refused at boot, once, and booted from the last-known-good.
    await p.stop()
    const q = await fleet.proxy('skewed', join(fleet.work, 'state'))
    expect(q.output.join('\n')).toMatch(/control plane head rejected at boot/)
    expect(await runningVersion(q)).toBe(1)
    await waitUntil(async () => (await failures(q)) === 1, 10_000, 'the boot refusal counted')
  }, 120_000)
})
