// Sweep 16: how the proxy reads a GraphQL request and runs the request chain. Real igw proxy,
// real graphql-yoga / node:http / graphql-ws backends, undici and graphql-ws clients.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter, RequestContext } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { Router, type Routable } from '../../proxy/router.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, metricSum, startTestProxy, startWorkerProxy, type TestProxy } from '../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../helpers/subscription-backend.ts'
import { GqlClient, waitUntil } from './subscriptions/clients.ts'

describe('a filter answering a subscribe is named in igw_filter_errors_total (sweep 16)', () => {
  let be: SubscriptionBackend
  let proxy: WorkerProxy
  let url: string

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    // Answers every subscribe with errors that are not GraphQL errors (a string entry).
    const guard: Filter = {
      name: 'guard',
      onRequest(ctx: RequestContext) {
        if (ctx.subscription === undefined) return undefined
        return { status: 403, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ errors: ['no'] }), code: 'FORBIDDEN' }
      },
    }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => guard } }
    const config = validateConfig({
      log: { level: 'silent' },
      routes: [{ name: 'subs', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }],
    })
    ;({ proxy, url } = await startWorkerProxy(config, modules))
  })
  afterAll(async () => {
    await proxy?.drain(500)
    await be?.close()
  })

  it('labels the malformed reply with the filter that answered, not a made-up "subscribe-reply"', async () => {
    const c = new GqlClient(url)
    try {
      const s = c.subscribe('subscription Refused { events(channel: "r") { seq } }')
      await waitUntil(() => s.received.error !== undefined || c.closed !== undefined, 10_000, 'the refusal')
      expect((s.received.error as { message: string }[])[0]!.message).toBe('no')
      const text = await proxy.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
      expect(text).toMatch(/igw_filter_errors_total\{filter="guard"\} 1/)
      expect(text).not.toContain('subscribe-reply')
    } finally {
      await c.dispose()
    }
  })
})

describe('a WebSocket upgrade a filter refuses is logged and counted as an HTTP request is (sweep 16)', () => {
  let be: RawBackend
  let proxy: WorkerProxy
  let port: number
  const logs = new LogCapture()

  beforeAll(async () => {
    be = await startRawBackend((req, res) => {
      req.resume()
      res.writeHead(404)
      res.end()
    })
    const gate: Filter = {
      name: 'gate',
      onRequest(ctx: RequestContext) {
        const mode = ctx.req.headers['x-mode']
        if (mode === 'refuse') return { status: 401, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"message":"who?","extensions":{"code":"UNAUTHENTICATED"}}]}', code: 'UNAUTHENTICATED' }
        if (mode === 'throw') throw new Error('gate broke')
        return undefined
      },
    }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => gate } }
    const config = validateConfig({ routes: [{ name: 'ws', upstream: be.url, type: 'http', filters: [{ name: 'request-id' }] }] })
    proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    port = (proxy.server.address() as AddressInfo).port
  })
  afterAll(async () => {
    await proxy?.drain(500)
    await be?.close()
  })

  async function upgrade(mode: string): Promise<number> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`, { headers: { 'x-mode': mode } })
    ws.on('error', () => {})
    const [, res] = (await once(ws, 'unexpected-response')) as [unknown, import('node:http').IncomingMessage]
    res.resume()
    ws.terminate()
    return res.statusCode!
  }

  it('the access line carries the code (as for HTTP), and a fail-closed 500 is in igw_proxy_errors_total', async () => {
    expect(await upgrade('refuse')).toBe(401)
    expect(await upgrade('throw')).toBe(500)
    await waitUntil(() => logs.find('access').length >= 2, 10_000, 'two access lines')
    const lines = logs.find('access')
    expect(lines.find((l) => l.status === 401)?.code).toBe('UNAUTHENTICATED')
    expect(lines.find((l) => l.status === 500)?.code).toBe('INTERNAL_SERVER_ERROR')
    const text = await proxy.metrics.registry.getSingleMetricAsString('igw_proxy_errors_total')
    expect(metricSum(text, 'igw_proxy_errors_total', 'code="INTERNAL_SERVER_ERROR"')).toBe(1)
  })
})

describe('GraphQL request parsing (sweep 16)', () => {
  let yoga: DemoBackend
  let raw: RawBackend
  let proxy: TestProxy
  const seen: { url: string; body: string }[] = []

  beforeAll(async () => {
    yoga = await startDemoBackend()
    raw = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        seen.push({ url: req.url ?? '', body: Buffer.concat(chunks).toString() })
        const body = JSON.stringify({ data: { ran: true } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      })
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      routes: [
        { name: 'yoga', match: { pathPrefix: '/yoga' }, upstream: yoga.url },
        { name: 'cached', match: { pathPrefix: '/cached' }, upstream: raw.url, filters: [{ name: 'tenant' }, { name: 'cache' }] as never },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await yoga?.close()
    await raw?.close()
  })

  it('an empty operationName is no operation name: a mutation in a GET is still refused before the backend', async () => {
    // graphql-yoga (and others) read `operationName=` as absent and run the document's only
    // operation; the gateway saw "no operation" and let the mutation through its GET guard.
    const before = seen.length
    const q = encodeURIComponent('mutation M { ran }')
    for (const target of [`/cached/graphql?query=${q}&operationName=`, `/cached/graphql?operationName=&query=${q}`]) {
      const res = await request(`${proxy.url}${target}`, { headers: { 'x-tenant-id': 'acme' } })
      expect(res.statusCode, target).toBe(405)
      const body = (await res.body.json()) as { errors: { extensions: { code: string } }[] }
      expect(body.errors[0]!.extensions.code).toBe('METHOD_NOT_ALLOWED')
    }
    expect(seen.length).toBe(before)
  })
})

describe('routing by Host with ports (sweep 16)', () => {
  let a: RawBackend
  let b: RawBackend
  let proxy: TestProxy
  const answer = (name: string) => (_req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    _req.resume()
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(name)
  }

  beforeAll(async () => {
    a = await startRawBackend(answer('a'))
    b = await startRawBackend(answer('b'))
    proxy = await startTestProxy({
      mode: 'ingress',
      upstreams: { a: { url: a.url }, b: { url: b.url } },
      routes: [
        { name: 'wild-port', match: { host: '*.example.com:8080' }, upstream: 'a', type: 'http' },
        { name: 'api-admin-port', match: { host: 'api.example.org:8080', pathPrefix: '/admin' }, upstream: 'a', type: 'http' },
        { name: 'api', match: { host: 'api.example.org' }, upstream: 'b', type: 'http' },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await a?.close()
    await b?.close()
  })

  async function via(host: string, path: string): Promise<string> {
    const res = await request(`${proxy.url}${path}`, { headers: { host } })
    const text = await res.body.text()
    return res.statusCode === 200 ? text : `${res.statusCode}`
  }

  it('a wildcard host with a port matches hosts on that port', async () => {
    expect(await via('shop.example.com:8080', '/x')).toBe('a')
    expect(await via('Shop.Example.com:8080', '/x')).toBe('a')
    expect(await via('shop.example.com:9090', '/x')).toBe('404')
    expect(await via('shop.example.com', '/x')).toBe('404')
    expect(await via('example.com:8080', '/x')).toBe('404')
  })

  it('a host with a port that only some paths route by still reaches the host routes for the other paths', async () => {
    expect(await via('api.example.org:8080', '/admin/x')).toBe('a')
    expect(await via('api.example.org:8080', '/graphql')).toBe('b')
    expect(await via('api.example.org', '/graphql')).toBe('b')
  })

  it('the router itself, for the same cases', () => {
    const r = (name: string, host: string | undefined, pathPrefix: string): Routable => ({ name, host, pathPrefix })
    const router = new Router([r('wild-port', '*.example.com:8080', '/'), r('exact-port-admin', 'api.example.org:8080', '/admin'), r('exact', 'api.example.org', '/'), r('any', undefined, '/')])
    expect(router.match('a.example.com:8080', '/')?.name).toBe('wild-port')
    expect(router.match('a.b.example.com:8080', '/')?.name).toBe('wild-port')
    expect(router.match('a.example.com', '/')?.name).toBe('any')
    expect(router.match('api.example.org:8080', '/admin')?.name).toBe('exact-port-admin')
    expect(router.match('api.example.org:8080', '/other')?.name).toBe('exact')
    // The longer name wins over a port; for one name, the port-specific group first.
    const order = new Router([r('port', '*.example.com:8080', '/'), r('eu', '*.eu.example.com', '/'), r('any-port', '*.example.com', '/')])
    expect(order.match('a.eu.example.com:8080', '/')?.name).toBe('eu')
    expect(order.match('a.example.com:8080', '/')?.name).toBe('port')
    expect(order.match('a.example.com:9090', '/')?.name).toBe('any-port')
  })
})
