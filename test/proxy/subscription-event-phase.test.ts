// The chain's third phase: onSubscriptionEvent sees every event of a terminated subscription as
// it is about to reach one client, and may withhold it (per client: others on the same shared
// upstream stream are unaffected). Driven through a real WorkerProxy, the real hub, a real
// graphql-yoga backend and real graphql-ws clients; the filter implementations are substituted
// for registry names, as in filter-chain.test.ts.
import { createClient } from 'graphql-ws'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter, SubscriptionContext, StreamEvent } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startWorkerProxy } from '../helpers/proxy.ts'

describe('subscription-event phase', () => {
  let backend: DemoBackend
  let proxy: WorkerProxy
  let url: string
  const seen: { tenant: string | undefined; route: string; value: number }[] = []
  let throwOn = -1

  beforeAll(async () => {
    backend = await startDemoBackend()
    // Withholds odd values for tenant "acme" only; throws on `throwOn` (fail closed: withheld, counted).
    const parity: Filter = {
      name: 'parity',
      onSubscriptionEvent(ctx: SubscriptionContext, ev: StreamEvent) {
        const value = (ev.payload as { data: { countdown: number } }).data.countdown
        seen.push({ tenant: ctx.tenant, route: ctx.route, value })
        if (value === throwOn) throw new Error('filter bug')
        return ctx.tenant === 'acme' && value % 2 === 1 ? { status: 403, body: 'withheld' } : undefined
      },
    }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => parity } }
    const config = validateConfig({
      log: { level: 'silent' },
      tenants: { acme: {}, globex: {} },
      routes: [{ name: 'subs', upstream: backend.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'request-id' }] }],
    })
    ;({ proxy, url } = await startWorkerProxy(config, modules))
  })
  afterAll(async () => {
    await proxy?.drain(500)
    await backend?.close()
  })

  async function countdown(tenant: string, from: number): Promise<{ values: number[]; error?: unknown }> {
    const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, connectionParams: { 'x-tenant-id': tenant } })
    const values: number[] = []
    try {
      await new Promise<void>((resolve, reject) =>
        client.subscribe({ query: `subscription { countdown(from: ${from}, intervalMs: 5) }` }, { next: (v) => values.push((v.data as { countdown: number }).countdown), error: reject, complete: resolve }),
      )
      return { values }
    } catch (error) {
      return { values, error }
    } finally {
      await client.dispose()
    }
  }

  it('withholds events per client, with the tenant and route on the context', async () => {
    seen.length = 0
    const [acme, globex] = await Promise.all([countdown('acme', 6), countdown('globex', 6)])
    expect(acme.values).toEqual([6, 4, 2])
    expect(globex.values).toEqual([6, 5, 4, 3, 2, 1])
    expect(seen.filter((s) => s.tenant === 'acme').map((s) => s.value)).toEqual([6, 5, 4, 3, 2, 1])
    expect(new Set(seen.map((s) => s.route))).toEqual(new Set(['subs']))
  })

  it('a filter that throws withholds the event (fail closed) and is counted', async () => {
    throwOn = 4
    const r = await countdown('globex', 5)
    throwOn = -1
    expect(r.values).toEqual([5, 3, 2, 1])
    const text = await proxy.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
    expect(text).toContain('igw_filter_errors_total{filter="parity"} 1')
  })
})
