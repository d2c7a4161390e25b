// QoS shedding counted a request in flight before deciding, and gave it back when it shed it:
// under overload the lower tiers about to be shed in other worker threads raised the shared count
// for a moment, and a gold request there saw a full proxy while real in-flight was under
// maxInFlight. A shed request now never touches the shared count. Observed where it matters: the
// shared count at the moment the filter sheds a bronze request (when the gauge reads it in other
// threads), through the shed counter of a real filter on a real shared buffer.
import type { IncomingMessage } from 'node:http'
import { pino } from 'pino'
import { Registry, type Counter } from 'prom-client'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { H_INFLIGHT, QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { RequestContext } from '../../../proxy/context.ts'
import type { LocalReply } from '../../../proxy/filter.ts'
import type { RouteRuntime } from '../../../proxy/runtime.ts'
import { echoHandler, startRawBackend } from '../../helpers/backends.ts'

describe('QoS in-flight accounting', () => {
  it('a shed request never raises the shared in-flight count, and an admitted one takes one unit', async () => {
    const config = validateConfig({
      tenants: { g: { tier: 'gold' }, b: { tier: 'bronze' } },
      quotas: { qos: { maxInFlight: 10 } }, // bronze shed from 7 in flight, gold from 10
      routes: [{ name: 'api', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    const registry = new Registry()
    const shared = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const i32 = new Int32Array(shared)
    const filter = await quotaFilter.create(config.routes[0]!.filters[1] as never, { routeName: 'api', workerId: 0, config, logger: pino({ level: 'silent' }), registry, shared, redis: undefined })
    const drops = registry.getSingleMetric('igw_qos_drops_total') as Counter<'tier' | 'kind'>
    const atShed: number[] = []
    const labels = drops.labels.bind(drops)
    drops.labels = ((...a: Parameters<typeof labels>) => {
      atShed.push(Atomics.load(i32, H_INFLIGHT))
      return labels(...a)
    }) as typeof drops.labels
    const be = await startRawBackend(echoHandler)
    const reqs: IncomingMessage[] = []
    be.server.on('request', (req: IncomingMessage) => reqs.push(req))
    await Promise.all(Array.from({ length: 10 }, () => request(be.url).then((r) => r.body.dump())))
    const route = { name: 'api', timeouts: { totalMs: 0 } } as unknown as RouteRuntime
    const ctxOf = (req: IncomingMessage, tenant: string, tier: 'gold' | 'silver' | 'bronze', i: number) => {
      const c = new RequestContext(req, undefined, route, pino({ level: 'silent' }), performance.now(), `r${i}`)
      c.tenant = tenant
      c.tier = tier
      return c
    }
    const held: RequestContext[] = []
    try {
      for (let i = 0; i < 8; i++) {
        const c = ctxOf(reqs[i]!, 'g', 'gold', i)
        expect(await filter.onRequest!(c)).toBeUndefined()
        held.push(c)
      }
      expect(Atomics.load(i32, H_INFLIGHT)).toBe(8)
      const shed = (await filter.onRequest!(ctxOf(reqs[8]!, 'b', 'bronze', 8))) as LocalReply
      expect(shed.status).toBe(503)
      expect(atShed).toEqual([8]) // the old code read 9 here: its own unit, taken before deciding
      expect(Atomics.load(i32, H_INFLIGHT)).toBe(8)
      const gold = ctxOf(reqs[9]!, 'g', 'gold', 9)
      expect(await filter.onRequest!(gold)).toBeUndefined()
      expect(Atomics.load(i32, H_INFLIGHT)).toBe(9)
      gold.runCleanups()
      for (const c of held) c.runCleanups()
      expect(Atomics.load(i32, H_INFLIGHT)).toBe(0)
    } finally {
      await filter.close?.()
      await be.close()
    }
  })
})
