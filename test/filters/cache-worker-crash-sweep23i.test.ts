// A worker thread that dies (terminated like a crash: no cleanups) while it leads a cache fill
// held that key's process-wide single-flight slot until its lease ran out (a minute without a
// route timeout): every miss on the key, in the surviving thread and in the dead one's
// replacement, waited for a broadcast that never came. The supervisor now frees the dead
// thread's slots, and waiting followers see it and elect a new leader. Real proxy (supervisor
// and 2 worker threads), a real node:http backend that holds the first request, undici clients.
import type { ServerResponse } from 'node:http'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('cache: a crashed worker thread gives its single-flight slots back', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const state = { hold: true, calls: 0, held: [] as ServerResponse[] }

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        state.calls++
        if (state.hold) state.held.push(res)
        else res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"v":1}}')
      })
    })
    proxy = await startTestProxy({ workers: 2, routes: [{ name: 'crash', match: { pathPrefix: '/' }, upstream: backend.url, filters: [{ name: 'cache', requireTenant: false }] as never }] })
  })
  afterAll(async () => {
    for (const r of state.held.splice(0)) r.destroy()
    await proxy?.close()
    await backend?.close()
  })

  const body = JSON.stringify({ query: '{ v }' })
  const send = (pool: Pool) =>
    pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(8_000) }).then(
      async (r) => ({ status: r.statusCode, text: await r.body.text() }),
      (err: Error) => ({ status: 0, text: err.name }),
    )

  async function crashAndRestart(i: number): Promise<void> {
    const before = proxy.threads()[i]!
    await before.terminate()
    await waitUntil(async () => {
      const now = proxy.threads()[i]
      return now !== undefined && now !== before && metricSum(await proxy.metricsText(), 'igw_workers') === 2
    }, 8_000, 'worker restarted')
  }

  it('misses on the key wait no longer than the dead leader', async () => {
    const leaderPool = new Pool(proxy.url, { connections: 1 })
    const pool = new Pool(proxy.url, { connections: 12, pipelining: 0 })
    try {
      const leader = send(leaderPool)
      await waitUntil(() => state.calls === 1, 5_000, 'the leader upstream')
      // Followers on many connections: some wait in the leader's thread, some in the other.
      const followers = Array.from({ length: 12 }, () => send(pool))
      state.hold = false
      // Which thread leads is the kernel's choice: crash thread 0, then thread 1 if the leader lived.
      await crashAndRestart(0)
      const settled = await Promise.race([leader.then(() => true), new Promise<boolean>((r) => setTimeout(r, 500, false))])
      if (!settled) await crashAndRestart(1)
      expect((await leader).status).toBe(0)
      // The followers that survived the crash are answered now, as is every new miss.
      const fresh = Array.from({ length: 6 }, () => send(pool))
      const answers = await Promise.all([...followers, ...fresh])
      for (const r of answers.slice(12)) expect(r).toEqual({ status: 200, text: '{"data":{"v":1}}' })
      for (const r of answers.slice(0, 12)) if (r.status !== 0) expect(r).toEqual({ status: 200, text: '{"data":{"v":1}}' })
    } finally {
      await leaderPool.destroy()
      await pool.destroy()
    }
  })
})
