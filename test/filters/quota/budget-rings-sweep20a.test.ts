// Sweep 20a: the shared table has 1024 budget rings (ring 0 the overflow, shared), never given
// back. Tenants not listed in the config (`allowUnlisted`) could take every one of them, so a
// client inventing tenant ids pushed each listed tenant seen afterwards into the overflow ring:
// its budget was summed with strangers' usage, and with `hardCap` it was refused
// BUDGET_EXHAUSTED before spending a unit — silently (no overflow counted). Listed tenants now
// get their ring when the filter starts, and unlisted ones may take only 75 % of the pool.
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OVERFLOW_RING, QUOTA_SHARED_BYTES, QuotaTable, RING_CAPACITY } from '../../../filters/quota/shared-table.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy } from '../../helpers/proxy.ts'

let be: RawBackend
beforeAll(async () => {
  be = await startRawBackend(echoHandler)
})
afterAll(async () => {
  await be?.close()
})

async function call(pool: Pool, tenant: string): Promise<{ status: number; code?: string }> {
  const res = await pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  const text = await res.body.text()
  if (res.statusCode === 200) return { status: 200 }
  return { status: res.statusCode, code: (JSON.parse(text) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code }
}

describe('budget rings and unlisted tenants (sweep 20a)', () => {
  it('a flood of made-up tenant ids does not put a listed tenant into the shared overflow budget', async () => {
    const p = await startTestProxy({
      tenants: { acme: {} },
      quotas: { defaults: { budget: { units: 3, hardCap: true } } },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant', allowUnlisted: true }, { name: 'quota' }] }],
    })
    const pool = new Pool(p.url, { connections: 32 })
    try {
      // More made-up tenants than there are rings: one request each.
      const ids = Array.from({ length: RING_CAPACITY + 8 }, (_, i) => `made-up-${i}`)
      for (let i = 0; i < ids.length; i += 64) await Promise.all(ids.slice(i, i + 64).map((t) => call(pool, t)))
      // The overflow ring is spent by now (its tenants share 3 units).
      expect((await call(pool, 'made-up-late')).code).toBe('BUDGET_EXHAUSTED')
      // The listed tenant, first seen after the flood, has its own budget.
      const acme = [await call(pool, 'acme'), await call(pool, 'acme'), await call(pool, 'acme'), await call(pool, 'acme')]
      expect(acme.map((r) => r.status)).toEqual([200, 200, 200, 429])
      expect(acme[3]!.code).toBe('BUDGET_EXHAUSTED')
      // Tenants sharing the overflow budget are counted.
      expect(metricSum(await p.metricsText(), 'igw_quota_table_overflows')).toBeGreaterThan(0)
    } finally {
      await pool.close()
      await p.close()
    }
  })

  it('unlisted tenants leave a quarter of the rings for tenants listed later (a reload)', () => {
    const t = new QuotaTable(new SharedArrayBuffer(QUOTA_SHARED_BYTES))
    let overflowed = 0
    for (let i = 0; i < RING_CAPACITY; i++) if (t.ringOf(t.slotOf(`u${i}`, false), false) === OVERFLOW_RING) overflowed++
    expect(overflowed).toBeGreaterThanOrEqual(RING_CAPACITY / 4)
    const listed = Array.from({ length: 200 }, (_, i) => t.ringOf(t.slotOf(`listed-${i}`)))
    expect(listed.filter((r) => r === OVERFLOW_RING)).toHaveLength(0)
    expect(new Set(listed).size).toBe(200)
  })
})
