// While the upstream is down, every hit on a stale-while-revalidate entry starts a background
// refresh, and each failed one logged a warning: a log line per request, at request rate, for
// the whole outage. Now one line per 5 s, with the count of those held back.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

const MSG = 'cache: background revalidation failed; the stale entry stays'

describe('cache: failed background refreshes', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const state = { down: false, cut: 0 }

  beforeAll(async () => {
    backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      req.resume()
      if (state.down) {
        state.cut++
        req.socket.destroy() // the refresh fails (no response at all)
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"v":1}}')
    })
    proxy = await startTestProxy({
      routes: [{ name: 'r', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false, ttlSeconds: 1, staleWhileRevalidateSeconds: 600 }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const get = async () => {
    const res = await request(`${proxy.url}/graphql?query=${encodeURIComponent('{ v }')}`)
    return { cache: res.headers['x-cache'], body: await res.body.text() }
  }
  const refreshes = async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_cache_refreshes_total', 'trigger="stale"')

  it('log one line per window, not one per failed refresh', async () => {
    expect(await get()).toEqual({ cache: 'MISS', body: '{"data":{"v":1}}' })
    const storedAt = Date.now()
    while (Date.now() < storedAt + 1_100) await sleep(50) // past its 1 s TTL
    state.down = true
    // Six refreshes, each started once the one before it had failed (a hit starts one only then).
    for (let n = 1; n <= 6; n++) {
      await expect.poll(async () => {
        expect(await get()).toEqual({ cache: 'STALE', body: '{"data":{"v":1}}' })
        return refreshes()
      }, { timeout: 5_000, interval: 20 }).toBeGreaterThanOrEqual(n)
    }
    // At least five of them failed and were handled (the sixth started after the fifth failed).
    expect(state.cut).toBeGreaterThanOrEqual(5)
    await expect.poll(() => proxy.logs.find(MSG).length, { timeout: 2_000, interval: 20 }).toBe(1)
    expect(proxy.logs.find(MSG)[0]).toMatchObject({ held: 0 })
  })
})
