// A reload whose build waits (a quota filter warming up against a Redis that does not answer) while an older snapshot goes idle: real igw, real backends.
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { afterAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { validateConfig } from '../../config/load.ts'
import { sleep } from '../helpers/wait.ts'

describe('an older snapshot going idle while the next one is being built', () => {
  const closers: (() => Promise<unknown>)[] = []
  afterAll(async () => {
    for (const c of closers.reverse()) await c().catch(() => undefined)
  }, 20_000)

  it("does not close the upstream pool the snapshot being built just opened", async () => {
    // A "Redis" that accepts and never answers: the quota filter's warm-up waits (up to 1 s)
    // for it, so building that snapshot spans many loop turns.
    const muted = new Set<Socket>()
    const mute = createServer((s) => {
      muted.add(s)
      s.on('error', () => undefined)
    })
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r))
    closers.push(async () => {
      for (const s of muted) s.destroy()
      await new Promise((r) => mute.close(r))
    })
    const mutePort = (mute.address() as AddressInfo).port

    let releaseSlow!: () => void
    const slow: RawBackend = await startRawBackend((req, res) => {
      req.resume()
      releaseSlow = () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"slow":true}}')
    })
    closers.push(() => slow.close())
    const fast: RawBackend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"fast":true}}'))
    })
    closers.push(() => fast.close())

    const base = { listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, mode: 'ingress' as const }
    const proxy: TestProxy = await startTestProxy({ mode: 'ingress', routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, upstream: slow.url }] })
    closers.push(() => proxy.close())

    // v1 holds a request.
    const held = request(`${proxy.url}/slow`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ slow }"}' })
    await sleep(200)
    // v2 replaces it (v1 retires once that request is done).
    const v2 = await proxy.applyConfig(validateConfig({ ...base, routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, upstream: slow.url, timeouts: { totalMs: 20_000 } }] }))
    expect(v2.ok).toBe(true)
    // v3 adds an upstream and a filter whose build takes a while.
    const v3 = proxy.applyConfig(
      validateConfig({
        ...base,
        redis: { url: `redis://127.0.0.1:${mutePort}`, keyPrefix: 'rv:' },
        tenants: { acme: {} },
        quotas: { redis: { onOutage: 'fail-open' }, tenants: { acme: { graphql: { rate: 100, burst: 100 } } } },
        routes: [
          { name: 'slow', match: { pathPrefix: '/slow' }, upstream: slow.url },
          { name: 'fast', match: { pathPrefix: '/fast' }, upstream: fast.url, filters: [{ name: 'tenant' }, { name: 'quota' }] },
        ],
      }),
    )
    await sleep(300)
    // v1's last request finishes while v3 is still being built.
    releaseSlow()
    expect((await held).statusCode).toBe(200)
    expect((await v3).ok).toBe(true)

    const r = await request(`${proxy.url}/fast`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ fast }"}' })
    const text = await r.body.text()
    expect({ status: r.statusCode, text }).toEqual({ status: 200, text: '{"data":{"fast":true}}' })
  }, 20_000)
})
