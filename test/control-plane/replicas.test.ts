// Two control plane instances on one PostgreSQL (the Kubernetes PostgreSQL overlay runs two): a
// change written through one reaches proxies connected to the other (LISTEN/NOTIFY), and
// concurrent writes through both stay serialized (412 for the loser, one linear audit chain).
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let pg: TestPostgres
let a: TestControlPlane
let b: TestControlPlane
beforeAll(async () => {
  pg = await startPostgres()
  const db = await pg.createDatabase('igw_replicas')
  const dir = mkdtempSync(join(tmpdir(), 'igw-replicas-')) // one signing key for both, as a mounted Secret
  a = await startTestControlPlane({ db, dir })
  b = await startTestControlPlane({ db, dir, seed: null })
})
afterAll(async () => {
  await a?.close()
  await b?.close()
  await pg?.close()
})

describe('control plane replicas on one PostgreSQL', () => {
  it('a proxy connected to B receives a change committed through A', async () => {
    const token = await b.token({ sub: 'p', roles: ['proxy'] })
    const ac = new AbortController()
    const res = await fetch(`${b.url}/v1/stream?proxy=replica-test&version=1`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
    expect(res.status).toBe(200)
    const reader = res.body!.getReader()
    const put = await a.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
    const { version } = (await put.json()) as { version: number }
    let text = ''
    const t0 = Date.now()
    while (!text.includes(`id: ${version}\nevent: snapshot`) && Date.now() - t0 < 5_000) {
      const { value, done } = await reader.read()
      if (done) break
      text += new TextDecoder().decode(value)
    }
    ac.abort()
    expect(text).toContain(`id: ${version}\nevent: snapshot`)
    expect(b.store.head()!.version).toBe(version)
  })

  it('concurrent conditional writes through both instances: exactly one wins, the other gets 412', async () => {
    const etag = (await a.api('/v1/tenants/acme')).headers.get('etag')!
    const [ra, rb] = await Promise.all([
      a.api('/v1/tenants/acme', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }), headers: { 'if-match': etag } }),
      b.api('/v1/tenants/acme', { method: 'PUT', body: JSON.stringify({ tier: 'silver' }), headers: { 'if-match': etag } }),
    ])
    expect([ra.status, rb.status].sort()).toEqual([200, 412])
    const verify = (await (await b.api('/v1/audit/verify')).json()) as { ok: boolean }
    expect(verify.ok).toBe(true)
  })
})
