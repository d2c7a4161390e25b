// Budget threshold markers follow their threshold's value, not its position in the list: a reload
// (or a restart with a changed config) that adds, removes or reorders thresholds neither fires one
// again that already fired in this window nor silences one that has not (without Redis).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../../config/load.ts'
import { add, advance, crossedThresholds, RING_F64, type BudgetShape } from '../../../filters/quota/rolling-budget.ts'
import { QUOTA_SHARED_BYTES, QuotaTable } from '../../../filters/quota/shared-table.ts'
import { restoreState, snapshotState } from '../../../filters/quota/state-file.ts'
import { startDemoBackend, startRawBackend, type DemoBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { waitUntil, sleep } from '../../helpers/wait.ts'

const H = 3_600_000
const t0 = Date.UTC(2026, 10, 20, 10)
const shape = (thresholds: number[]): BudgetShape => ({ units: 100, windowMs: 24 * H, bucketMs: H, buckets: 24, thresholds })

describe('budget threshold markers across a change of thresholds (sweep 14d)', () => {
  it('dropping 0.8 from [0.8, 1] does not silence the 100 % event', () => {
    const f = new Float64Array(RING_F64)
    advance(f, 0, t0, shape([0.8, 1]))
    add(f, 0, 85)
    expect(crossedThresholds(f, 0, t0, shape([0.8, 1]), false)).toBe(0b01)
    advance(f, 0, t0 + 1, shape([1]))
    add(f, 0, 15)
    expect(crossedThresholds(f, 0, t0 + 1, shape([1]), false)).toBe(0b1) // 100 % reached: it fires
  })

  it('adding 0.5 before [0.8, 1] fires 0.5 (new) but not 0.8 again', () => {
    const f = new Float64Array(RING_F64)
    advance(f, 0, t0, shape([0.8, 1]))
    add(f, 0, 85)
    expect(crossedThresholds(f, 0, t0, shape([0.8, 1]), false)).toBe(0b01)
    expect(crossedThresholds(f, 0, t0 + 1, shape([0.5, 0.8, 1]), false)).toBe(0b001)
    expect(crossedThresholds(f, 0, t0 + 2, shape([0.5, 0.8, 1]), false)).toBe(0)
    add(f, 0, 15)
    expect(crossedThresholds(f, 0, t0 + 3, shape([0.5, 0.8, 1]), false)).toBe(0b100)
  })

  it('the markers and their thresholds survive the state file; an older file keeps markers by position', () => {
    const a = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    const slot = a.slotOf('acme')
    const o = a.ringBase(a.ringOf(slot))
    const now = Date.now()
    advance(a.f64, o, now, shape([0.8, 1]))
    add(a.f64, o, 85)
    expect(crossedThresholds(a.f64, o, now, shape([0.8, 1]), false)).toBe(0b01)
    const doc = JSON.parse(JSON.stringify(snapshotState(a, now))) as ReturnType<typeof snapshotState>
    // Restarted with thresholds [1]: 100 % has not fired, and fires when reached; 0.8's marker does not stand in for it.
    const b = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    expect(restoreState(b, doc, now)).toEqual({ restored: 1, skipped: 0 })
    const ob = b.ringBase(b.ringOf(b.slotOf('acme')))
    advance(b.f64, ob, now + 1, shape([1]))
    add(b.f64, ob, 15)
    expect(crossedThresholds(b.f64, ob, now + 1, shape([1]), false)).toBe(0b1)
    // Restarted with [0.5, 0.8, 1]: 0.8 does not fire again.
    const c = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    restoreState(c, doc, now)
    const oc = c.ringBase(c.ringOf(c.slotOf('acme')))
    advance(c.f64, oc, now + 1, shape([0.5, 0.8, 1]))
    expect(crossedThresholds(c.f64, oc, now + 1, shape([0.5, 0.8, 1]), false)).toBe(0b001)
    // A file from a writer that did not record whose marker is whose: the markers keep their positions.
    const legacy = JSON.parse(JSON.stringify(doc)) as typeof doc
    delete legacy.tenants[0]!.budget!.firedFor
    const d = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    restoreState(d, legacy, now)
    const od = d.ringBase(d.ringOf(d.slotOf('acme')))
    advance(d.f64, od, now + 1, shape([0.8, 1]))
    expect(crossedThresholds(d.f64, od, now + 1, shape([0.8, 1]), false)).toBe(0)
  })
})

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

describe('budget events across a reload (sweep 14d)', () => {
  it('a reload that drops the 80 % threshold still sends the 100 % event; one that adds 50 % does not repeat 80 %', async () => {
    const received: { type: string; tenant: string; threshold: number }[] = []
    const hook = await startRawBackend((req, res) => {
      let d = ''
      req.on('data', (c: Buffer) => (d += c))
      req.on('end', () => {
        received.push(JSON.parse(d) as { type: string; tenant: string; threshold: number })
        res.writeHead(200).end()
      })
    })
    const doc = (thresholds: number[]) => ({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
      tenants: { thrdrop: {}, thradd: {} },
      quotas: { defaults: { budget: { units: 10, window: '1d', bucket: '1h', thresholds } }, events: { webhook: { url: hook.url } } },
    })
    const p = await startTestProxy(doc([0.8, 1]) as never)
    const send = async (tenant: string, n: number) => {
      for (let i = 0; i < n; i++) {
        const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: JSON.stringify({ query: '{ hello }' }) })
        await r.body.dump()
        expect(r.statusCode).toBe(200)
      }
    }
    const of = (tenant: string) => received.filter((e) => e.tenant === tenant).map((e) => e.threshold)
    try {
      await send('thrdrop', 8)
      await send('thradd', 8)
      await waitUntil(() => of('thrdrop').length === 1 && of('thradd').length === 1, 5_000, '80 % events')
      expect((await p.applyConfig(validateConfig(doc([1])))).ok).toBe(true)
      await send('thrdrop', 2)
      await waitUntil(() => of('thrdrop').length === 2, 5_000, 'the 100 % event after the reload')
      expect(of('thrdrop')).toEqual([0.8, 1])
      expect((await p.applyConfig(validateConfig(doc([0.5, 0.8, 1])))).ok).toBe(true)
      await send('thradd', 1)
      await waitUntil(() => of('thradd').length === 2, 5_000, 'the new 50 % event')
      await sleep(300)
      expect(of('thradd')).toEqual([0.8, 0.5])
    } finally {
      await p.close()
      await hook.close()
    }
  })
})
