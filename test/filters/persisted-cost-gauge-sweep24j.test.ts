// Persisted filter sweep 24j: igw_persisted_operation_cost{persisted_id} after a reload. Each
// filter set the gauge for its manifest's ids but nothing removed an id the new manifest no
// longer has: a deleted (or renamed) operation kept being reported, with its old cost, until the
// proxy restarted. Real proxy (worker thread), applyConfig, /metrics.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('igw_persisted_operation_cost follows the manifest in force', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const doc = (operations: Record<string, { document: string; costUnits: number }>) => ({
    persistedDocuments: { operations },
    routes: [{ name: 'r', upstream: backend.url, filters: [{ name: 'persisted' }] as never }],
  })
  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => res.end('{"data":{}}'))
    proxy = await startTestProxy(doc({ keep: { document: 'query Keep { a }', costUnits: 3 }, gone: { document: 'query Gone { b }', costUnits: 9 } }))
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const series = async () => {
    const text = await (await request(`${proxy.adminUrl}/metrics`)).body.text()
    return text
      .split('\n')
      .filter((l) => l.startsWith('igw_persisted_operation_cost{'))
      .sort()
  }

  it('an id the reloaded manifest drops is no longer reported; a changed cost is', async () => {
    expect(await series()).toEqual(['igw_persisted_operation_cost{persisted_id="gone"} 9', 'igw_persisted_operation_cost{persisted_id="keep"} 3'])
    const r = await proxy.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, ...doc({ keep: { document: 'query Keep { a }', costUnits: 4 }, fresh: { document: 'query Fresh { c }', costUnits: 5 } }) } as never))
    expect(r.ok).toBe(true)
    await expect.poll(series, { timeout: 5_000 }).toEqual(['igw_persisted_operation_cost{persisted_id="fresh"} 5', 'igw_persisted_operation_cost{persisted_id="keep"} 4'])
  })
})
