// anomaly.volume compares today with the previous 7 calendar days (docs/control-plane.md), not
// with the 7 latest days that had traffic: a tenant back after weeks away is not measured against
// what it did a month ago. Real control plane (SQLite), reports over HTTP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

const DAY = 86_400_000
let cp: TestControlPlane
let proxyToken: string
beforeAll(async () => {
  cp = await startTestControlPlane()
  proxyToken = await cp.token({ roles: ['proxy'] })
})
afterAll(async () => {
  await cp?.close()
})

let seq = 0
async function report(at: number, tenants: Record<string, { requests: number }>): Promise<void> {
  const body = { proxyId: 'vol16', bootId: 'vol16-boot', seq: ++seq, at: new Date(at).toISOString(), tenants }
  const r = await cp.api('/v1/usage', { method: 'POST', token: proxyToken, body: JSON.stringify(body) })
  expect(r.status).toBe(200)
  expect(((await r.json()) as { accepted: boolean }).accepted).toBe(true)
}

async function volumeAlerts(tenant: string): Promise<{ detail: Record<string, unknown> }[]> {
  const r = await cp.api(`/v1/alerts?tenant=${tenant}`)
  expect(r.status).toBe(200)
  return ((await r.json()) as { items: { kind: string; detail: Record<string, unknown> }[] }).items.filter((a) => a.kind === 'anomaly.volume')
}

describe('anomaly.volume looks at the previous 7 days (sweep 16)', () => {
  it('a tenant back after three idle weeks is not compared with its traffic of a month ago', async () => {
    const now = Date.now()
    // acme (UTC) was busy 30 to 24 days ago, then idle: its previous 7 days hold nothing.
    for (let d = 30; d >= 24; d--) await report(now - d * DAY, { acme: { requests: 100 } })
    await report(now, { acme: { requests: 400 } })
    expect(await volumeAlerts('acme')).toEqual([])
  })

  it('a surge over the last week still alerts, against that week only', async () => {
    const now = Date.now()
    // umbrella (not in the document: UTC days, 24 h each): heavy a month ago (which must not
    // raise the average), 10 a day this week.
    for (let d = 30; d >= 25; d--) await report(now - d * DAY, { umbrella: { requests: 1000 } })
    for (let d = 5; d >= 1; d--) await report(now - d * DAY, { umbrella: { requests: 10 } })
    await report(now, { umbrella: { requests: 40 } })
    const vol = await volumeAlerts('umbrella')
    expect(vol).toHaveLength(1)
    expect(vol[0]!.detail).toMatchObject({ requests: 40, average: 10, days: 5 })
  })
})
