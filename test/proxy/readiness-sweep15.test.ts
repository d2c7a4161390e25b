// /readyz and upstream health: in ingress mode one dead backend made every gateway pod unready
// (Kubernetes then removed all of them from the Service: every other route went down too).
// admin.readiness.upstreams (all | any | none) decides; the default follows the mode.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

interface ReadyBody {
  ready: boolean
  readiness?: { upstreams: string }
  upstreams: { name: string; url: string; healthy: boolean; error: string | undefined }[]
}

async function readyz(proxy: TestProxy): Promise<{ status: number; body: ReadyBody }> {
  const res = await request(`${proxy.adminUrl}/readyz`)
  return { status: res.statusCode, body: (await res.body.json()) as ReadyBody }
}

/** Waits until every listed upstream has a verdict (the dead one an error): no timing luck in the asserts. */
async function settled(proxy: TestProxy, dead: string[]): Promise<{ status: number; body: ReadyBody }> {
  await expect
    .poll(
      async () => {
        const { body } = await readyz(proxy)
        return body.upstreams.every((u) => (dead.includes(u.name) ? u.error !== undefined : u.healthy))
      },
      { timeout: 15_000, interval: 100 },
    )
    .toBe(true)
  return readyz(proxy)
}

const fastCheck = { healthCheck: { intervalMs: 200, timeoutMs: 500 } }

describe('/readyz upstream policy (admin.readiness.upstreams)', () => {
  let live: RawBackend
  let deadUrl: string
  let other: string
  const proxies: TestProxy[] = []
  beforeAll(async () => {
    live = await startRawBackend((_req, res) => res.end('{}'))
    // Ports 1 and 2 lie below the ephemeral range: no other test's listener can take them
    // between here and the probe (a port freed by freePort() could be, and was once in CI).
    deadUrl = 'http://127.0.0.1:1'
    other = 'http://127.0.0.1:2'
  })
  afterAll(async () => {
    for (const p of proxies) await p.close()
    await live?.close()
  })

  const ingress = (readiness?: 'all' | 'any' | 'none', urls?: { a: string; b: string }): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
    mode: 'ingress',
    ...(readiness ? { admin: { listen: '127.0.0.1:0', readiness: { upstreams: readiness } } } : {}),
    upstreams: { orders: { url: urls?.a ?? live.url, ...fastCheck }, billing: { url: urls?.b ?? deadUrl, ...fastCheck } },
    routes: [
      { name: 'orders', match: { host: 'orders.example.com' }, upstream: 'orders', type: 'http', filters: [] },
      { name: 'billing', match: { host: 'billing.example.com' }, upstream: 'billing', type: 'http', filters: [] },
    ],
  })
  const start = async (doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'>): Promise<TestProxy> => {
    const p = await startTestProxy(doc)
    proxies.push(p)
    return p
  }

  it('ingress (default): one dead upstream does not make the gateway unready; the body still lists it', async () => {
    const proxy = await start(ingress())
    const { status, body } = await settled(proxy, ['billing'])
    expect(status).toBe(200)
    expect(body.ready).toBe(true)
    expect(body.readiness).toEqual({ upstreams: 'none' })
    const byName = Object.fromEntries(body.upstreams.map((u) => [u.name, u]))
    expect(byName.orders).toMatchObject({ healthy: true })
    expect(byName.billing).toMatchObject({ healthy: false })
    expect(byName.billing!.error).toEqual(expect.any(String))
    // The live route is served meanwhile, and the dead one answers its own error.
    const ok = await request(`${proxy.url}/x`, { headers: { host: 'orders.example.com' } })
    expect(ok.statusCode).toBe(200)
    await ok.body.dump()
    const bad = await request(`${proxy.url}/x`, { headers: { host: 'billing.example.com' } })
    expect(bad.statusCode).toBeGreaterThanOrEqual(502)
    await bad.body.dump()
  })

  it('ingress with readiness "all": unready while one is dead (the old behaviour, when asked for)', async () => {
    const proxy = await start(ingress('all'))
    const { status, body } = await settled(proxy, ['billing'])
    expect(status).toBe(503)
    expect(body).toMatchObject({ ready: false, readiness: { upstreams: 'all' } })
  })

  it('ingress with readiness "any": ready while one answers, unready when none does', async () => {
    const one = await start(ingress('any'))
    expect((await settled(one, ['billing'])).status).toBe(200)
    const none = await start(ingress('any', { a: other, b: deadUrl }))
    const { status, body } = await settled(none, ['orders', 'billing'])
    expect(status).toBe(503)
    expect(body.upstreams.map((u) => u.healthy)).toEqual([false, false])
  })

  it('sidecar (default): its one app down still makes the pod unready', async () => {
    const proxy = await start({ upstreams: { app: { url: deadUrl, ...fastCheck } }, routes: [{ name: 'app', upstream: 'app', filters: [] }] })
    const { status, body } = await settled(proxy, ['app'])
    expect(status).toBe(503)
    expect(body).toMatchObject({ ready: false, readiness: { upstreams: 'all' } })
  })

  it('the policy follows a reload (admin.listen stays, and only it needs a restart)', async () => {
    const proxy = await start(ingress())
    expect((await settled(proxy, ['billing'])).status).toBe(200)
    const next = validateConfig({ ...ingress('all'), listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0', readiness: { upstreams: 'all' } }, workers: 1 })
    const r = await proxy.applyConfig(next)
    expect(r.ok).toBe(true)
    const { status, body } = await settled(proxy, ['billing'])
    expect(status).toBe(503)
    expect(body.readiness).toEqual({ upstreams: 'all' })
    expect(proxy.logs.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('"admin'))).toEqual([])
  })

  it('the schema fills the default by mode and accepts only all | any | none', () => {
    const base = { routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }] }
    expect(validateConfig(base).admin.readiness.upstreams).toBe('all')
    expect(validateConfig({ ...base, mode: 'ingress' }).admin.readiness.upstreams).toBe('none')
    expect(validateConfig({ ...base, mode: 'ingress', admin: { readiness: { upstreams: 'any' } } }).admin.readiness.upstreams).toBe('any')
    expect(() => validateConfig({ ...base, admin: { readiness: { upstreams: 'some' } } })).toThrow(/admin\.readiness\.upstreams/)
  })
})

describe('upstream health probes', () => {
  it('one probe at a time per upstream: intervalMs below timeoutMs does not pile up probes on a slow upstream', async () => {
    let open = 0
    let maxOpen = 0
    let seen = 0
    const slow = await startRawBackend((req, res) => {
      if (req.url !== '/health') return void res.end('{}')
      seen++
      open++
      maxOpen = Math.max(maxOpen, open)
      res.on('close', () => open--)
      const t = setTimeout(() => res.end('ok'), 1_500) // longer than the probe's timeout
      res.on('close', () => clearTimeout(t))
    })
    const proxy = await startTestProxy({
      upstreams: { app: { url: slow.url, healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 800 } } },
      routes: [{ name: 'app', upstream: 'app', type: 'http', filters: [] }],
    })
    try {
      // Two timed-out probes (and their successors) have gone by.
      await expect.poll(() => seen, { timeout: 15_000, interval: 100 }).toBeGreaterThanOrEqual(3)
      const { body } = await readyz(proxy)
      expect(body.upstreams[0]).toMatchObject({ name: 'app', healthy: false })
      expect(maxOpen).toBe(1)
    } finally {
      await proxy.close()
      await slow.close()
    }
  })
})
