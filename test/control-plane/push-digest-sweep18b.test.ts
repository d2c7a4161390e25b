// A control plane whose store was reset (or restored from an older backup) and then committed up to
// the fleet's version number again, with OTHER content. The reconnect protocol carried only the
// version number, so a proxy coming back "at version 3" was told `current` and stayed on its own
// version 3 while the store's version 3 was another document — and its reconnect even cleared the
// NACK it had sent, so GET /v1/proxies showed it healthy. Now the proxy sends the digest of the
// document it runs: the control plane sends the head when it differs (counted, logged), the proxy
// refuses it visibly (versions only move forward), and older proxies (no digest) work as before.
import { createHash } from 'node:crypto'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capturingLogger, metricSample, ProxyFleet, runningVersion, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import type { SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

/** The first SSE event of a stream (event name and data), then the stream is aborted. */
async function firstEvent(cp: TestControlPlane, id: string, query: string): Promise<{ status: number; event?: string; data?: string }> {
  const ac = new AbortController()
  const res = await fetch(`${cp.url}/v1/stream?proxy=${id}&${query}`, { headers: { authorization: `Bearer ${await cp.token({ sub: id, roles: ['proxy'] })}` }, signal: ac.signal })
  if (res.status !== 200) {
    await res.text()
    return { status: res.status }
  }
  try {
    const reader = res.body!.getReader()
    let text = ''
    const dec = new TextDecoder()
    for (let i = 0; i < 100 && !text.includes('\n\n'); i++) {
      const { value, done } = await reader.read()
      if (done) break
      text += dec.decode(value, { stream: true })
    }
    const block = text.split('\n\n')[0]!
    const line = (k: string) => block.split('\n').find((l) => l.startsWith(`${k}: `))?.slice(k.length + 2)
    return { status: 200, event: line('event'), data: line('data') }
  } finally {
    ac.abort()
  }
}

describe('the stream protocol with a digest', () => {
  let cp: TestControlPlane
  const log = capturingLogger()
  beforeAll(async () => {
    cp = await startTestControlPlane({ logger: log.logger })
    expect((await cp.api('/v1/tenants/dg1', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
  })
  afterAll(async () => {
    await cp?.close()
    rmSync(cp.dir, { recursive: true, force: true })
  })

  it('same version, other digest: the snapshot (counted, logged); same digest or no digest (an older proxy): current', async () => {
    const head = cp.store.head()!
    expect(head.version).toBe(2)
    const other = createHash('sha256').update('another document').digest('hex')
    const mismatch = await firstEvent(cp, 'dg-other', `version=2&digest=${other}`)
    expect(mismatch).toMatchObject({ status: 200, event: 'snapshot' })
    expect(JSON.parse(mismatch.data!)).toEqual(head.envelope)
    const line = log.lines.find((l) => l.proxy === 'dg-other' && /another document/.test(String(l.msg)))
    expect(line).toMatchObject({ version: 2, proxyDigest: other, storeDigest: head.digest })
    const metrics = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
    expect(metricSample(metrics, 'igw_control_plane_stream_digest_mismatches_total')).toBe(1)

    expect(await firstEvent(cp, 'dg-same', `version=2&digest=${head.digest}`)).toMatchObject({ status: 200, event: 'current', data: '{"version":2}' })
    expect(await firstEvent(cp, 'dg-old', 'version=2')).toMatchObject({ status: 200, event: 'current', data: '{"version":2}' })
    // A newer head is sent whatever the digest says.
    expect((await firstEvent(cp, 'dg-behind', `version=1&digest=${other}`)).event).toBe('snapshot')
    // A malformed digest is a 400 naming it, before any stream.
    expect((await firstEvent(cp, 'dg-bad', 'version=2&digest=xyz')).status).toBe(400)
  })

  it('an ACK of version N naming another document does not clear the NACK of this store\'s N; one naming ours does', async () => {
    const id = 'dg-acker'
    const token = await cp.token({ sub: id, roles: ['proxy'] })
    const ac = new AbortController()
    const res = await fetch(`${cp.url}/v1/stream?proxy=${id}&version=0`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
    expect(res.status).toBe(200)
    const answer = async (body: object) => {
      const r = await cp.api(`/v1/proxies/${id}/ack`, { method: 'POST', token, body: JSON.stringify(body) })
      expect(r.status).toBe(204)
    }
    const rowOf = async () => ((await (await cp.api('/v1/proxies')).json()) as { items: { id: string; appliedVersion: number | null; lastNack: { version: number } | null }[] }).items.find((i) => i.id === id)!
    try {
      await answer({ version: 2, status: 'NACK', error: 'version 2 is another document than version 2, which this proxy runs' })
      await answer({ version: 2, status: 'ACK', digest: createHash('sha256').update('its own').digest('hex') })
      expect(await rowOf()).toMatchObject({ appliedVersion: 2, lastNack: { version: 2 } })
      await answer({ version: 2, status: 'ACK', digest: cp.store.head()!.digest })
      expect(await rowOf()).toMatchObject({ appliedVersion: 2, lastNack: null })
      const bad = await cp.api(`/v1/proxies/${id}/ack`, { method: 'POST', token, body: JSON.stringify({ version: 2, status: 'ACK', digest: 'nope' }) })
      expect(bad.status).toBe(400)
    } finally {
      ac.abort()
    }
  })
})

describe('a real proxy reconnecting to a store that holds another document under its version', () => {
  const fleet = new ProxyFleet('digest')
  beforeAll(() => fleet.start())
  afterAll(() => fleet.close())
  const query = (p: SpawnedIgw, tenant: string) =>
    fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query: '{ hello(name: "digest") }' }) })

  it('is sent the head, NACKs it as another document, keeps serving its own version, and the NACK stays after reconnects', async () => {
    const p = await fleet.proxy('digest-1', join(fleet.work, 'state-1'))
    expect(await fleet.commitTenant('orig-a')).toBe(2)
    expect(await fleet.commitTenant('orig-b')).toBe(3)
    await waitUntil(async () => (await fleet.row('digest-1'))?.appliedVersion === 3, 15_000, 'the proxy to ACK version 3')
    // The store is wiped and rebuilt up to version 3 with other content while the proxy cannot
    // reach it (another control plane on the same files, on another port).
    await fleet.stopCp()
    for (const f of ['igw.db', 'igw.db-wal', 'igw.db-shm']) rmSync(join(fleet.cpDir, f), { force: true })
    const elsewhere = await startTestControlPlane({ dir: fleet.cpDir, seed: (await import('../helpers/control-plane.ts')).seedDocument(fleet.backendUrl) })
    for (const t of ['other-a', 'other-b']) expect((await elsewhere.api(`/v1/tenants/${t}`, { method: 'PUT', body: JSON.stringify({ tier: 'silver' }) })).status).toBe(201)
    expect(elsewhere.store.head()!.version).toBe(3)
    await elsewhere.close()
    // Back at the proxy's address: the proxy reconnects "at version 3".
    await fleet.startCp()
    await waitUntil(async () => {
      const r = await fleet.row('digest-1')
      return r?.connected === true && r.lastNack?.version === 3
    }, 20_000, 'a NACK of the store\'s other version 3')
    expect((await fleet.row('digest-1'))!.lastNack!.error).toMatch(/another document than version 3/)
    expect(await runningVersion(p)).toBe(3)
    expect((await query(p, 'orig-b')).status).toBe(200)
    // Another reconnect (control plane restart) does not clear it: the proxy still runs the other 3.
    const at = (await fleet.row('digest-1'))!.lastNack!.at
    await fleet.stopCp()
    await fleet.startCp()
    await waitUntil(async () => {
      const r = await fleet.row('digest-1')
      return r?.connected === true && r.lastNack?.version === 3 && r.lastNack.at !== at
    }, 20_000, 'the NACK again after the reconnect')
    // The way out still works: the next commit (version 4) reaches the proxy.
    expect(await fleet.commitTenant('after')).toBe(4)
    await waitUntil(async () => (await fleet.row('digest-1'))?.appliedVersion === 4 && (await runningVersion(p)) === 4, 15_000, 'version 4 applied')
    expect((await fleet.row('digest-1'))!.lastNack).toBeNull()
  })
})
