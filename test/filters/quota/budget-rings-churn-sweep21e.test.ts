// Sweep 21e: the shared table's budget rings (1024, ring 0 the shared overflow) were never given
// back. Tenants removed from the config by reloads, and tenants idle for longer than their window,
// kept theirs for the life of the process: after enough churn every new tenant went to the
// overflow ring, where all of them shared one budget (a hard cap refused each for the others'
// usage). Rings are now reclaimed once the pool is handed out: a ring whose window has passed
// since its last use (nothing in it counts), and for a listed tenant the least recently used ring
// of a tenant the config in force does not list.
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { RING_CAPACITY } from '../../../filters/quota/shared-table.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

let be: RawBackend
beforeAll(async () => {
  be = await startRawBackend(echoHandler)
})
afterAll(async () => {
  await be?.close()
})

async function call(pool: Pool, tenant: string): Promise<number> {
  const res = await pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
  await res.body.dump()
  return res.statusCode
}

/** Two new tenants, each with a hard-capped budget of 3: interleaved, both get exactly 3 (shared, 3 in all). */
async function expectOwnBudgets(pool: Pool, a: string, b: string): Promise<void> {
  const got: number[] = []
  for (let i = 0; i < 4; i++) got.push(await call(pool, a), await call(pool, b))
  expect(got).toEqual([200, 200, 200, 200, 200, 200, 429, 429])
}

describe('budget rings are reclaimed (sweep 21e)', () => {
  it('tenants removed by reloads give their rings to the tenants that replace them', async () => {
    let tenants = Object.fromEntries(Array.from({ length: RING_CAPACITY }, (_, i) => [`old-${i}`, {}]))
    const doc = () => ({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      tenants,
      quotas: { defaults: { budget: { units: 3, hardCap: true } } },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    const p = await startTestProxy(doc() as never, { loadConfig: () => validateConfig(doc()) })
    const pool = new Pool(p.url, { connections: 4 })
    try {
      // Every ring is taken by a tenant of the first config; the next config lists others.
      tenants = { 'new-1': {}, 'new-2': {} }
      expect(await p.reload()).toMatchObject({ ok: true })
      await expectOwnBudgets(pool, 'new-1', 'new-2')
    } finally {
      await pool.close()
      await p.close()
    }
  })

  it('rings of tenants idle for longer than their window go to new tenants', async () => {
    const BM = 1_000
    const p = await startTestProxy({
      tenants: {},
      quotas: { defaults: { budget: { units: 3, window: 2 * BM, bucket: BM, hardCap: true } } },
      routes: [{ name: 'api', upstream: be.url, filters: [{ name: 'tenant', allowUnlisted: true }, { name: 'quota' }] }],
    })
    const pool = new Pool(p.url, { connections: 32 })
    try {
      // More one-request tenants than unlisted tenants may hold rings.
      const ids = Array.from({ length: RING_CAPACITY }, (_, i) => `gone-${i}`)
      for (let i = 0; i < ids.length; i += 128) await Promise.all(ids.slice(i, i + 128).map((t) => call(pool, t)))
      // Their windows pass (the bucket of their last use leaves it), and a fruitless search's pause.
      const last = Date.now()
      const free = Math.max((Math.floor(last / BM) + 3) * BM, last + 1_000) + 50
      await waitUntil(() => Date.now() >= free, 10_000, 'the flood\'s windows to pass')
      await expectOwnBudgets(pool, 'late-1', 'late-2')
    } finally {
      await pool.close()
      await p.close()
    }
  })
})
