// Sweep 34h: during a backend outage every request fails the same way. Each has its access line
// (status and code) and is counted; the warn line "upstream request failed" came on top, one per
// request (1,460 lines in 3.5 s in a chaos test). It is now logged once per upstream and failure
// per 5 s, the next one carrying how many were held back (`alsoFailed`).
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { freePort } from '../helpers/ports.ts'
import { startTestProxy } from '../helpers/proxy.ts'

describe('a dead upstream', () => {
  it('N failed requests: N access lines, one warn line; the next window\'s line counts those held back', async () => {
    const dead = await freePort() // (nothing listens there: connection refused)
    const p = await startTestProxy({ routes: [{ name: 'g', upstream: `http://127.0.0.1:${dead}`, type: 'graphql' }] } as never)
    const ask = async () => {
      const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ a }"}' })
      const body = (await res.body.json()) as { errors: { extensions: { code: string } }[] }
      return [res.statusCode, body.errors[0]!.extensions.code]
    }
    try {
      const N = 40
      for (let i = 0; i < N; i += 10) {
        const got = await Promise.all(Array.from({ length: 10 }, ask))
        for (const g of got) expect(g).toEqual([502, 'UPSTREAM_UNAVAILABLE'])
      }
      const access = () => p.logs.find('access').filter((l) => l.route === 'g' && l.status === 502 && l.code === 'UPSTREAM_UNAVAILABLE')
      await expect.poll(() => access().length, { timeout: 5000 }).toBe(N)
      const warned = p.logs.find('upstream request failed')
      expect(warned).toHaveLength(1)
      expect(warned[0]).toMatchObject({ level: 'warn', upstream: expect.any(String) })
      expect(warned[0]!.alsoFailed).toBeUndefined()
      expect(JSON.stringify(warned[0]!.err)).toContain('ECONNREFUSED')

      // Past the window: the next failure is logged with the count of those held back.
      await new Promise((r) => setTimeout(r, 5200))
      expect(await ask()).toEqual([502, 'UPSTREAM_UNAVAILABLE'])
      await expect.poll(() => p.logs.find('upstream request failed').length, { timeout: 5000 }).toBe(2)
      expect(p.logs.find('upstream request failed')[1]).toMatchObject({ alsoFailed: N - 1 })
      await expect.poll(() => access().length, { timeout: 5000 }).toBe(N + 1)
    } finally {
      await p.close()
    }
  }, 30_000)
})
