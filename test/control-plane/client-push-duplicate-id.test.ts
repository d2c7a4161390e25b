// Two proxies started with the same --proxy-id: the control plane keeps one config stream per
// id, so each connection ends the other's. Reconnecting at once made that an endless silent
// storm (~4 streams a second, each a database write). The client now says what is probably
// happening and backs off exponentially on streams that keep ending soon after they open.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ReconnectPolicy } from '../../proxy/control-plane-client.ts'
import { metricSample, ProxyFleet } from '../helpers/control-plane.ts'
import type { SpawnedIgw } from '../helpers/proxy.ts'
import { sleep } from '../helpers/wait.ts'

const fleet = new ProxyFleet('twin')
const startTwin = (n: number): Promise<SpawnedIgw> => fleet.proxy('twin', join(fleet.work, `state-${n}`))

/** Config streams the control plane has seen end (each kick ends one). */
async function streamsEnded(): Promise<number> {
  const text = await (await fetch(`${fleet.cp!.metricsUrl}/metrics`)).text()
  return metricSample(text, 'igw_control_plane_requests_total', { route: '/v1/stream', method: 'GET', status: '200' }) ?? 0
}

beforeAll(() => fleet.start())

afterAll(() => fleet.close())

describe('two proxies with the same --proxy-id', () => {
  it('back off instead of kicking each other ~4 times a second, and warn naming the likely cause', async () => {
    const a = await startTwin(1)
    const b = await startTwin(2)
    await sleep(1_000)
    const from = await streamsEnded()
    // 4 s tells the two apart as 6 s did (half the unfixed count is the bound either way).
    await sleep(4_000)
    const ended = (await streamsEnded()) - from
    // Unfixed: one kick every ~250 ms (~16 in 4 s). With the backoff: a handful, then fewer.
    console.log(`streams ended in 4 s by two proxies with one id: ${ended}`)
    expect(ended).toBeLessThanOrEqual(8)
    for (const p of [a, b]) {
      const out = p.output.join('\n')
      expect(out).toMatch(/same proxy id/)
      expect(out).toContain('"proxyId":"twin"')
    }
    // Both still serve (each holds the stream part of the time and catches up when it does).
    // (connection: close: no idle keep-alive for their stop to wait the drain's grace, 1 s each, on.)
    for (const p of [a, b]) expect((await fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' }, body: '{"query":"{ hello }"}' })).status).toBe(200)
  })
})

describe('ReconnectPolicy (the backoff, without sockets)', () => {
  const mid = () => 0.5
  it('doubles the delay on streams that keep ending soon after they open, capped, with jitter', () => {
    const r = new ReconnectPolicy(undefined, mid)
    const delays = Array.from({ length: 10 }, () => r.ended(100).delayMs)
    expect(delays).toEqual([188, 375, 750, 1500, 3000, 6000, 12000, 22500, 22500, 22500])
    const lo = new ReconnectPolicy(undefined, () => 0)
    const hi = new ReconnectPolicy(undefined, () => 0.999999)
    for (let i = 0; i < 20; i++) {
      expect(lo.ended(100).delayMs).toBeGreaterThanOrEqual(125)
      expect(hi.ended(100).delayMs).toBeLessThanOrEqual(30_000)
    }
  })

  it('a stream that lived long resets the count; connection failures back off to 5 s', () => {
    const r = new ReconnectPolicy(undefined, mid)
    for (let i = 0; i < 6; i++) r.ended(1_000)
    expect(r.ended(120_000)).toEqual({ delayMs: 188, quick: false, quickEnds: 0 })
    expect(r.ended(1_000)).toMatchObject({ delayMs: 188, quick: true, quickEnds: 1 })
    const f = new ReconnectPolicy(undefined, mid)
    expect(Array.from({ length: 7 }, () => f.failed())).toEqual([188, 375, 750, 1500, 3000, 3750, 3750])
    f.opened()
    expect(f.failed()).toBe(188)
  })
})
