import { writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { Client, request } from 'undici'
import { echoHandler, startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { metricSum, spawnIgw, startTestProxy, writeTempConfig } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

async function text(url: string, init?: Parameters<typeof request>[1]): Promise<{ status: number; body: string }> {
  const res = await request(url, init)
  return { status: res.statusCode, body: await res.body.text() }
}

describe('hot reload, drain and multi-worker metrics (real igw processes)', () => {
  let echo: RawBackend
  let yoga: DemoBackend
  beforeAll(async () => {
    echo = await startRawBackend((req, res) => {
      if (req.url?.startsWith('/slow')) {
        setTimeout(() => res.end('slow done'), 600)
        return
      }
      echoHandler(req, res)
    })
    yoga = await startDemoBackend()
  })
  afterAll(async () => {
    await echo?.close()
    await yoga?.close()
  })

  const base = (extra: Record<string, unknown> = {}) => ({
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    workers: 1,
    log: { level: 'warn' },
    routes: [{ name: 'a', match: { pathPrefix: '/a' }, upstream: echo.url, type: 'http' }],
    ...extra,
  })

  it('reloads a good file on change and on SIGHUP, rejects a bad one keeping the old, without dropping connections', async () => {
    const path = writeTempConfig(base())
    const igw = await spawnIgw(['proxy', '--config', path])
    try {
      // One client connection for the whole test: a reload must not drop it.
      const agent = new Client(igw.url, { keepAliveTimeout: 60_000 })
      let disconnects = 0
      agent.on('disconnect', () => disconnects++)
      expect((await text(`${igw.url}/a/1`, { dispatcher: agent })).status).toBe(200)
      expect((await text(`${igw.url}/b/1`, { dispatcher: agent })).status).toBe(404)

      // 1. a good change on disk: new route appears
      writeFileSync(path, JSON.stringify(base({ routes: [...base().routes, { name: 'b', match: { pathPrefix: '/b' }, upstream: echo.url, type: 'http' }] })))
      await waitUntil(async () => (await text(`${igw.url}/b/1`, { dispatcher: agent })).status === 200)
      const m1 = await text(`${igw.adminUrl}/metrics`)
      expect(metricSum(m1.body, 'igw_config_version')).toBe(2)

      // 2. a bad change: rejected, counted, old config keeps serving on the same connection
      writeFileSync(path, 'routes:\n  - name: broken\n    upstream: "htp:/x"\n')
      await waitUntil(async () => metricSum((await text(`${igw.adminUrl}/metrics`)).body, 'igw_config_reload_failures_total') === 1)
      // IgwConfigReloadRejected reads this: 0 for as long as the refused document is the last offered.
      expect(metricSum(m1.body, 'igw_config_last_reload_successful')).toBe(1)
      expect(metricSum((await text(`${igw.adminUrl}/metrics`)).body, 'igw_config_last_reload_successful')).toBe(0)
      expect((await text(`${igw.url}/b/2`, { dispatcher: agent })).status).toBe(200)
      expect(metricSum((await text(`${igw.adminUrl}/metrics`)).body, 'igw_config_version')).toBe(2)
      expect(igw.output.join('\n')).toContain('routes[0].upstream: expected URL, got \\"htp:/x\\"')

      // 3. SIGHUP with a fixed file (written while we pretend the watcher missed it)
      writeFileSync(path, JSON.stringify(base()))
      igw.child.kill('SIGHUP')
      await waitUntil(async () => (await text(`${igw.url}/b/3`, { dispatcher: agent })).status === 404)
      expect(metricSum((await text(`${igw.adminUrl}/metrics`)).body, 'igw_config_last_reload_successful')).toBe(1)
      // the keep-alive connection survived every reload: one connection was used throughout
      expect(disconnects).toBe(0)
      await agent.close()
    } finally {
      expect(await igw.stop()).toBe(0)
    }
  })

  it('SIGTERM drains: in-flight requests finish, WebSockets get 1001, exit code 0', async () => {
    const path = writeTempConfig(base({ mode: 'ingress', routes: [{ name: 'slow', match: { pathPrefix: '/slow' }, upstream: echo.url, type: 'http' }, { name: 'gql', upstream: yoga.url }], shutdown: { drainTimeoutMs: 5_000 } }))
    const igw = await spawnIgw(['proxy', '--config', path])
    const ws = new WebSocket(`ws://127.0.0.1:${igw.port}/graphql`, ['graphql-transport-ws'])
    await once(ws, 'open')
    const closed = once(ws, 'close')
    const inflight = Array.from({ length: 20 }, (_, i) => text(`${igw.url}/slow/${i}`))
    await new Promise((r) => setTimeout(r, 150))
    igw.child.kill('SIGTERM')
    const results = await Promise.all(inflight)
    expect(results.every((r) => r.status === 200 && r.body === 'slow done')).toBe(true)
    const [code] = (await closed) as [number]
    expect(code).toBe(1001)
    expect(await igw.exited).toBe(0)
    await expect(request(`${igw.url}/slow/late`)).rejects.toThrow()
  })

  it('serves with 2 workers; /metrics is one view that counts every worker', async () => {
    const path = writeTempConfig(base({ workers: 2 }))
    const igw = await spawnIgw(['proxy', '--config', path])
    try {
      // Fresh connections (each closed after its answer) spread over both reusePort listeners: the
      // chance that 90 all land on one thread is 2^-89. None is left idle for the drain to wait on.
      const N = 90
      for (let i = 0; i < N; i += 30) {
        await Promise.all(Array.from({ length: 30 }, (_, j) => text(`${igw.url}/a/${i + j}`, { reset: true })))
      }
      const first = (await text(`${igw.adminUrl}/metrics`)).body
      const second = (await text(`${igw.adminUrl}/metrics`)).body
      expect(metricSum(first, 'igw_requests_total', 'route="a"')).toBe(N)
      expect(metricSum(second, 'igw_requests_total', 'route="a"')).toBe(N)
      const w0 = metricSum(first, 'igw_worker_requests_total', 'worker="0"')
      const w1 = metricSum(first, 'igw_worker_requests_total', 'worker="1"')
      expect(w0).toBeGreaterThan(0)
      expect(w1).toBeGreaterThan(0)
      expect(w0 + w1).toBe(N)
      expect(metricSum(first, 'igw_request_duration_seconds_count', 'route="a"')).toBe(N)
      expect(metricSum(first, 'igw_workers')).toBe(2)
    } finally {
      await igw.stop()
    }
  })

  it('restarts a crashed worker while the others keep serving', async () => {
    const proxy = await startTestProxy({ workers: 2, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    try {
      const threads = proxy.threads()
      expect(threads).toHaveLength(2)
      await threads[0]!.terminate() // as abrupt as a crash: no drain, no goodbye
      expect((await text(`${proxy.url}/x`)).status).toBe(200)
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_workers') === 2)
      expect(metricSum(await proxy.metricsText(), 'igw_worker_restarts_total')).toBe(1)
      expect(proxy.threads().filter(Boolean)).toHaveLength(2)
    } finally {
      await proxy.close()
    }
  })

  it('counters never go backwards when a worker dies: its counts stay in every later scrape', async () => {
    const proxy = await startTestProxy({ workers: 2, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    try {
      // A connection each (reset), so the kernel spreads them over both threads.
      const N = 40
      for (let i = 0; i < N; i++) expect((await text(`${proxy.url}/x`, { reset: true })).status).toBe(200)
      const before = await proxy.metricsText()
      expect(metricSum(before, 'igw_requests_total', 'route="a"')).toBe(N)
      expect(metricSum(before, 'igw_request_duration_seconds_count', 'route="a"')).toBe(N)
      // Both threads served some (the kernel spreads connections); the one that dies takes its counts with it.
      await proxy.threads()[0]!.terminate()
      await waitUntil(async () => metricSum(await proxy.metricsText(), 'igw_workers') === 2)
      expect((await text(`${proxy.url}/x`)).status).toBe(200)
      const after = await proxy.metricsText()
      expect(metricSum(after, 'igw_requests_total', 'route="a"')).toBe(N + 1)
      expect(metricSum(after, 'igw_request_duration_seconds_count', 'route="a"')).toBe(N + 1)
      // gauges are the live threads' only: the dead one's in-flight count is not kept
      expect(metricSum(after, 'igw_workers')).toBe(2)
    } finally {
      await proxy.close()
    }
  })

  it('`igw proxy --upstream URL` runs with no config file; IGW_* env twins work', async () => {
    const igw = await spawnIgw(['proxy', '--upstream', yoga.url, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], { IGW_WORKERS: '1', IGW_LOG_LEVEL: 'warn' })
    try {
      // (reset: no keep-alive connection left for the stop's drain to give its idle grace, 1 s)
      const res = await text(`${igw.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}', reset: true })
      expect(JSON.parse(res.body)).toEqual({ data: { hello: 'Hello, world!' } })
      const cfg = JSON.parse((await text(`${igw.adminUrl}/config`)).body) as { config: { workers: number; mode: string; log: { level: string } } }
      expect(cfg.config).toMatchObject({ workers: 1, mode: 'sidecar', log: { level: 'warn' } })
    } finally {
      await igw.stop()
    }
  })

  it('a bad config at start exits 78 with the failing path', async () => {
    const path = writeTempConfig({ routes: [{ name: 'x', upstream: 'htp:/x' }], tenants: { t: { tier: 'platinum' } } })
    await expect(spawnIgw(['proxy', '--config', path])).rejects.toThrow(/exited with 78[\s\S]*routes\[0\]\.upstream: expected URL, got "htp:\/x"[\s\S]*tenants\.t\.tier/)
  })
})
