// Usage alerts from the reports: anomaly.volume needs enough traffic to mean something, and a
// report counted once stays counted once — duplicates, a control plane restart in between.
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
async function report(c: TestControlPlane, at: number, tenants: Record<string, { requests: number }>, o: { proxyId?: string; bootId?: string; seq?: number } = {}) {
  const body = { proxyId: o.proxyId ?? 'vol-proxy', bootId: o.bootId ?? 'vol-boot', seq: o.seq ?? ++seq, at: new Date(at).toISOString(), tenants }
  const r = await c.api('/v1/usage', { method: 'POST', token: proxyToken, body: JSON.stringify(body) })
  expect(r.status).toBe(200)
  return (await r.json()) as { accepted: boolean; alerts: number }
}

async function alerts(c: TestControlPlane, tenant: string): Promise<{ kind: string; detail: Record<string, unknown> }[]> {
  const r = await c.api(`/v1/alerts?tenant=${tenant}`)
  expect(r.status).toBe(200)
  return ((await r.json()) as { items: { kind: string; detail: Record<string, unknown> }[] }).items
}

describe('anomaly.volume (sweep 14d)', () => {
  it('a tenant with a handful of requests a day does not alert on a few more', async () => {
    const now = Date.now()
    for (let d = 4; d >= 1; d--) await report(cp, now - d * DAY, { acme: { requests: 2 } })
    await report(cp, now, { acme: { requests: 7 } }) // 3.5× of 2, but 7 requests
    expect((await alerts(cp, 'acme')).filter((a) => a.kind === 'anomaly.volume')).toEqual([])
  })

  it('a real surge still alerts, once per day', async () => {
    const now = Date.now()
    for (let d = 4; d >= 1; d--) await report(cp, now - d * DAY, { globex: { requests: 10 } })
    await report(cp, now, { globex: { requests: 25 } })
    expect((await alerts(cp, 'globex')).filter((a) => a.kind === 'anomaly.volume')).toEqual([])
    await report(cp, now, { globex: { requests: 10 } }) // 35 today: over 3× of 10
    await report(cp, now, { globex: { requests: 10 } })
    const vol = (await alerts(cp, 'globex')).filter((a) => a.kind === 'anomaly.volume')
    expect(vol).toHaveLength(1)
    expect(vol[0]!.detail).toMatchObject({ requests: 35, average: 10, days: 4 })
  })
})

describe('usage reports counted once (sweep 14d, regression)', () => {
  it('a report retried after a control plane restart is not counted again; a new boot of the proxy is', async () => {
    const own = await startTestControlPlane()
    let ownOpen = true
    let again: TestControlPlane | undefined
    try {
      const at = Date.now()
      expect(await report(own, at, { acme: { requests: 5 } }, { proxyId: 'rp', bootId: 'b1', seq: 1 })).toMatchObject({ accepted: true })
      expect(await report(own, at, { acme: { requests: 5 } }, { proxyId: 'rp', bootId: 'b1', seq: 1 })).toMatchObject({ accepted: false })
      await own.close()
      ownOpen = false
      again = await startTestControlPlane({ dir: own.dir, seed: null })
      expect(await report(again, at, { acme: { requests: 5 } }, { proxyId: 'rp', bootId: 'b1', seq: 1 })).toMatchObject({ accepted: false })
      expect(await report(again, at, { acme: { requests: 3 } }, { proxyId: 'rp', bootId: 'b2', seq: 1 })).toMatchObject({ accepted: true })
      const day = new Date(at).toISOString().slice(0, 10)
      const st = (await (await again.api(`/v1/tenants/acme/statement?from=${day}&to=${day}`)).json()) as { totals: { requests: number } }
      expect(st.totals.requests).toBe(8)
    } finally {
      if (ownOpen) await own.close()
      await again?.close()
    }
  })
})
