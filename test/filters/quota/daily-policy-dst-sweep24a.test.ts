// The daily quota resets at the tenant's local midnight. On the days its zone changes clocks that
// day is 23 h or 25 h long, yet RateLimit-Policy always said "daily";w=86400: a client pacing its
// quota over the advertised window ran an hour past the reset, or was refused for the last hour
// it planned for. The window is now the length of the tenant's day, rebuilt when the day changes.
// The wall clock is set to those days (only Date is faked: timers and sockets run for real).
import type { IncomingMessage } from 'node:http'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { dayWindow } from '../../../filters/quota/calendar.ts'
import { quotaFilter } from '../../../filters/quota/index.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { RequestContext } from '../../../proxy/context.ts'
import type { Filter } from '../../../proxy/filter.ts'
import type { RouteRuntime } from '../../../proxy/runtime.ts'

const ZONE = 'Europe/Berlin'
const config = validateConfig({
  tenants: { acme: { timezone: ZONE } },
  quotas: { defaults: { graphql: { limitPerDay: 1000 } } },
  routes: [{ name: 'api', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota' }] }],
})
// The filter reads only the method, URL, host and peer address of the request it is given.
const req = { method: 'POST', url: '/graphql', headers: {}, socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage
const route = { name: 'api', timeouts: { totalMs: 0 } } as unknown as RouteRuntime

/** The "daily" item's window of the RateLimit-Policy an admitted request of `acme` gets. */
async function dailyWindow(filter: Filter, n: number): Promise<number> {
  const ctx = new RequestContext(req, undefined, route, pino({ level: 'silent' }), performance.now(), `r${n}`)
  ctx.tenant = 'acme'
  ctx.tier = 'silver'
  expect(await filter.onRequest!(ctx)).toBeUndefined()
  const h = ctx.responseHeaders ?? []
  const policy = h[h.indexOf('ratelimit-policy') + 1]!
  const m = /"daily";q=1000;w=(\d+)/.exec(policy)
  expect(m, policy).not.toBeNull()
  return Number(m![1])
}

/** Seconds in the tenant's day at `iso`, as its calendar has it. */
function daySeconds(iso: string): number {
  const w = dayWindow(ZONE, Date.parse(iso))
  return (w.end - w.start) / 1000
}

describe('RateLimit-Policy "daily" window on DST days (sweep 24a)', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('is the length of the tenant\'s day, and follows it from day to day', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(new Date('2026-03-28T12:00:00Z'))
    const filter = (await quotaFilter.create(config.routes[0]!.filters[1] as never, { routeName: 'api', workerId: 0, config, logger: pino({ level: 'silent' }), registry: new Registry(), shared: new SharedArrayBuffer(QUOTA_SHARED_BYTES), redis: undefined })) as Filter
    try {
      expect(await dailyWindow(filter, 1)).toBe(86_400)
      for (const [n, iso] of [[2, '2026-03-29T12:00:00Z'], [3, '2026-03-30T12:00:00Z'], [4, '2026-10-25T12:00:00Z']] as const) {
        vi.setSystemTime(new Date(iso))
        expect(await dailyWindow(filter, n)).toBe(daySeconds(iso))
      }
      expect(daySeconds('2026-03-29T12:00:00Z')).toBe(23 * 3600) // clocks go forward
      expect(daySeconds('2026-10-25T12:00:00Z')).toBe(25 * 3600) // and back
    } finally {
      await filter.close?.()
    }
  })
})
