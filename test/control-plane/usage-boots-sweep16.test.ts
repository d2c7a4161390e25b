// A usage report is counted once per (proxy, boot, seq) — also when another boot of the same
// proxy id reported in between (a restart while a retry was in flight, or two proxies sharing
// one id). Real control planes on SQLite and on a real PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let pg: TestPostgres
const planes: TestControlPlane[] = []
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  for (const cp of planes) await cp.close()
  await pg?.close()
})

async function plane(engine: 'sqlite' | 'postgres', name: string): Promise<TestControlPlane> {
  const cp = await startTestControlPlane(engine === 'postgres' ? { db: await pg.createDatabase(name) } : {})
  planes.push(cp)
  return cp
}

interface Posted {
  status: number
  body: { accepted?: boolean; problems?: string[] }
}

async function post(cp: TestControlPlane, token: string, report: { proxyId: string; bootId: string; seq: number; at: number; requests: number; tenant?: string }): Promise<Posted> {
  const body = { proxyId: report.proxyId, bootId: report.bootId, seq: report.seq, at: new Date(report.at).toISOString(), tenants: { [report.tenant ?? 'acme']: { requests: report.requests, byKind: { graphql: report.requests } } } }
  const r = await cp.api('/v1/usage', { method: 'POST', token, body: JSON.stringify(body) })
  return { status: r.status, body: (await r.json()) as Posted['body'] }
}

async function requestsOn(cp: TestControlPlane, tenant: string, at: number): Promise<number> {
  const day = new Date(at).toISOString().slice(0, 10) // acme is in UTC
  const r = await cp.api(`/v1/tenants/${tenant}/statement?from=${day}&to=${day}`)
  expect(r.status).toBe(200)
  return ((await r.json()) as { totals: { requests: number } }).totals.requests
}

describe.each(['sqlite', 'postgres'] as const)('usage reports across boots (%s, sweep 16)', (engine) => {
  it('a retry of an earlier boot that arrives after a newer boot reported is not counted again', async () => {
    const cp = await plane(engine, 'igw_usage_boots_retry')
    const token = await cp.token({ roles: ['proxy'] })
    const at = Date.now()
    // Boot A's report is counted, but its proxy never saw the answer (a timeout).
    expect(await post(cp, token, { proxyId: 'edge-1', bootId: 'boot-a', seq: 7, at, requests: 100 })).toEqual({ status: 200, body: { accepted: true, alerts: 0 } })
    // The proxy restarts (or its twin with the same id reports): boot B.
    expect((await post(cp, token, { proxyId: 'edge-1', bootId: 'boot-b', seq: 1, at, requests: 5 })).body.accepted).toBe(true)
    // Boot A's retry, still in flight, lands now: the same (boot, seq) — counted already.
    expect((await post(cp, token, { proxyId: 'edge-1', bootId: 'boot-a', seq: 7, at, requests: 100 })).body.accepted).toBe(false)
    expect(await requestsOn(cp, 'acme', at)).toBe(105)
    // A report of boot A that was never counted still is (its seq is past A's high-water) …
    expect((await post(cp, token, { proxyId: 'edge-1', bootId: 'boot-a', seq: 8, at, requests: 10 })).body.accepted).toBe(true)
    // … and boot B keeps its own high-water after that.
    expect((await post(cp, token, { proxyId: 'edge-1', bootId: 'boot-b', seq: 1, at, requests: 5 })).body.accepted).toBe(false)
    expect((await post(cp, token, { proxyId: 'edge-1', bootId: 'boot-b', seq: 2, at, requests: 1 })).body.accepted).toBe(true)
    expect(await requestsOn(cp, 'acme', at)).toBe(116)
  })

  it('two proxies sharing one id, interleaving with retries, are each counted exactly once per report', async () => {
    const cp = await plane(engine, 'igw_usage_boots_twins')
    const token = await cp.token({ roles: ['proxy'] })
    const at = Date.now()
    let expected = 0
    for (let seq = 1; seq <= 6; seq++) {
      for (const boot of ['twin-x', 'twin-y']) {
        const rep = { proxyId: 'shared-id', bootId: boot, seq, at, requests: seq, tenant: 'globex' }
        expect((await post(cp, token, rep)).body.accepted).toBe(true)
        expected += seq
      }
      // Each twin retries its previous report (its answer was lost) after the other reported.
      for (const boot of ['twin-x', 'twin-y']) expect((await post(cp, token, { proxyId: 'shared-id', bootId: boot, seq, at, requests: seq, tenant: 'globex' })).body.accepted).toBe(false)
    }
    const day = new Date(at).toLocaleDateString('en-CA', { timeZone: 'America/New_York' })
    const r = await cp.api(`/v1/tenants/globex/statement?from=${day}&to=${day}`)
    expect(((await r.json()) as { totals: { requests: number } }).totals.requests).toBe(expected)
  })

  it('the proxy id row written by the config stream (a plain boot id) still guards that boot', async () => {
    const cp = await plane(engine, 'igw_usage_boots_plain')
    const token = await cp.token({ roles: ['proxy'] })
    const at = Date.now()
    expect((await post(cp, token, { proxyId: 'edge-2', bootId: 'boot-p', seq: 1, at, requests: 3 })).body.accepted).toBe(true)
    // What a control plane before this change left in the row: the boot id itself.
    await cp.store.db.query('UPDATE proxies SET boot_id = $2, usage_seq = $3 WHERE id = $1', ['edge-2', 'boot-p', 1])
    expect((await post(cp, token, { proxyId: 'edge-2', bootId: 'boot-p', seq: 1, at, requests: 3 })).body.accepted).toBe(false)
    expect((await post(cp, token, { proxyId: 'edge-2', bootId: 'boot-p', seq: 2, at, requests: 4 })).body.accepted).toBe(true)
    expect(await requestsOn(cp, 'acme', at)).toBe(7)
  })
})

describe('usage report validation (sweep 16)', () => {
  it('a bootId longer than 200 characters is a 400 naming it', async () => {
    const cp = await plane('sqlite', 'unused')
    const token = await cp.token({ roles: ['proxy'] })
    const r = await post(cp, token, { proxyId: 'edge-3', bootId: 'b'.repeat(201), seq: 1, at: Date.now(), requests: 1 })
    expect(r.status).toBe(400)
    expect(r.body.problems).toEqual(['bootId: at most 200 characters, got 201'])
  })

  it('"__proto__" as a tenant or counter name is a 400 naming it, not a count the statement drops', async () => {
    const cp = await plane('sqlite', 'unused')
    const token = await cp.token({ roles: ['proxy'] })
    const at = new Date().toISOString()
    const send = async (tenants: string) => {
      const r = await cp.api('/v1/usage', { method: 'POST', token, body: `{"proxyId":"edge-4","bootId":"b","seq":1,"at":"${at}","tenants":${tenants}}` })
      return { status: r.status, body: (await r.json()) as { problems?: string[] } }
    }
    expect(await send('{"acme":{"requests":3,"rejections":{"__proto__":5}}}')).toEqual({ status: 400, body: expect.objectContaining({ problems: ['tenants.acme.rejections["__proto__"]: "__proto__" is not a tenant or counter name'] }) })
    expect(await send('{"acme":{"requests":3,"dlpActions":{"__proto__":5}}}')).toMatchObject({ status: 400 })
    expect(await send('{"__proto__":{"requests":3}}')).toEqual({ status: 400, body: expect.objectContaining({ problems: ['tenants["__proto__"]: "__proto__" is not a tenant or counter name'] }) })
    // Nothing of the refused reports was counted; the seq is still free for a good one.
    expect(await send('{"acme":{"requests":3,"rejections":{"RATE_LIMITED":2}}}')).toEqual({ status: 200, body: { accepted: true, alerts: 0 } })
    const day = at.slice(0, 10)
    const st = (await (await cp.api(`/v1/tenants/acme/statement?from=${day}&to=${day}`)).json()) as { totals: { requests: number; rejections: Record<string, number> } }
    expect(st.totals).toMatchObject({ requests: 3, rejections: { RATE_LIMITED: 2 } })
  })
})
