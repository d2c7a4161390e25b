// The filter chain's contract, driven through a real WorkerProxy (its logger the product's own,
// proxy/log.ts createLogger), a real node:http backend, undici and ws clients. Defects:
// - a filter that threw a value pino could not serialize (a frozen Error, an Error with a getter
//   that throws, a Proxy) made the "filter error" log call itself throw: the request hung and the
//   worker thread died of the uncaught exception;
// - a filter's own reply (a LocalReply) was written as it came onto an upgrade's raw socket: a
//   CR/LF in one of its header values split the head (an injected Set-Cookie), and a null
//   decision cut the client's socket without an answer;
// - ctx.log was bound to the request id and tenant of its first use: lines logged after the
//   request-id / tenant filters ran still carried the empty id and no tenant.
import { once } from 'node:events'
import type { IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Decision, type Filter } from '../../proxy/filter.ts'
import { createLogger } from '../../proxy/log.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture } from '../helpers/proxy.ts'

type FilterConfigInput = NonNullable<GatewayConfigInput['routes'][number]['filters']>[number]

/** A proxy whose route runs `filters` (config entries), the 'tenant' module replaced by `f`. */
async function startWith(f: Filter, backend: RawBackend, filters: FilterConfigInput[]) {
  const mods: FilterModules = { ...filterModules, tenant: { create: () => f } }
  const config = validateConfig({ log: { level: 'info' }, routes: [{ name: 'r', upstream: backend.url, type: 'http', filters }] })
  const logs = new LogCapture()
  const metrics = new ProxyMetrics(new Registry())
  const proxy = new WorkerProxy({ workerId: 0, logger: createLogger('info', logs as never), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const port = (proxy.server.address() as AddressInfo).port
  return { port, url: `http://127.0.0.1:${port}`, logs, metrics, close: () => proxy.drain(100) }
}

async function filterErrors(metrics: ProxyMetrics, name: string): Promise<string> {
  const text = await metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
  return text.split('\n').find((l) => l.startsWith(`igw_filter_errors_total{filter="${name}"}`)) ?? ''
}

/** The answer to an upgrade the proxy refused: status, headers and body (or the error if none came). */
async function refusal(port: number): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`, { handshakeTimeout: 15_000 })
  const failed = once(ws, 'error').then(([e]) => {
    throw e as Error
  })
  const answered = once(ws, 'unexpected-response').then(async ([, res]) => {
    const r = res as IncomingMessage
    let body = ''
    r.setEncoding('utf8')
    r.on('data', (c: string) => (body += c))
    await once(r, 'end')
    return { status: r.statusCode ?? 0, headers: r.headers, body }
  })
  try {
    return await Promise.race([answered, failed])
  } finally {
    failed.catch(() => undefined)
    ws.on('error', () => undefined)
    if (ws.readyState !== WebSocket.CLOSED) ws.terminate()
  }
}

function throwingGetterError(): Error {
  return Object.defineProperty(new Error('with a bad getter'), 'detail', {
    enumerable: true,
    get() {
      throw new Error('getter')
    },
  })
}

describe('filter chain contract (sweep19c)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  describe('a thrown value the logger cannot serialize', () => {
    const cases: [string, () => unknown, string][] = [
      ['a frozen Error', () => Object.freeze(new Error('frozen constant')), 'frozen constant'],
      ['an Error with a throwing getter', throwingGetterError, 'with a bad getter'],
      [
        'a Proxy',
        () =>
          new Proxy(
            {},
            {
              get() {
                throw new Error('trap')
              },
            },
          ),
        '[an error that could not be serialized]',
      ],
    ]
    it.each(cases)('%s: fail-open continues, fail-closed answers 500, logged and counted; the worker keeps serving', async (_n, make, message) => {
      let n = 0
      const bad: Filter = {
        name: 'bad',
        onRequest: (): Decision => {
          n++
          throw make()
        },
      }
      for (const failMode of ['open', 'closed'] as const) {
        const s = await startWith(bad, backend, [{ name: 'tenant', failMode }])
        try {
          const r = await request(`${s.url}/x`, { headersTimeout: 15_000, bodyTimeout: 15_000 })
          await r.body.text()
          expect(r.statusCode).toBe(failMode === 'open' ? 200 : 500)
          expect(await filterErrors(s.metrics, 'bad')).toMatch(/ 1$/)
          await expect.poll(() => s.logs.find('filter error').length, { timeout: 10_000 }).toBe(1)
          expect(s.logs.find('filter error')[0]).toMatchObject({ filter: 'bad', failMode, err: { message } })
          // and the next request is served as well
          const again = await request(`${s.url}/y`, { headersTimeout: 15_000 })
          await again.body.text()
          expect(again.statusCode).toBe(failMode === 'open' ? 200 : 500)
        } finally {
          await s.close()
        }
      }
      expect(n).toBe(4)
    })

    it('a cleanup that throws a frozen Error does not stop the cleanups after it', async () => {
      let released = 0
      const f: Filter = {
        name: 'cleaner',
        onRequest: (ctx) => {
          ctx.addCleanup(() => {
            throw Object.freeze(new Error('release failed'))
          })
          ctx.addCleanup(() => void released++)
        },
      }
      const s = await startWith(f, backend, [{ name: 'tenant' }])
      try {
        const r = await request(`${s.url}/x`, { headersTimeout: 15_000 })
        await r.body.text()
        expect(r.statusCode).toBe(200)
        await expect.poll(() => released, { timeout: 10_000 }).toBe(1)
        await expect.poll(() => s.logs.find('cleanup failed').length, { timeout: 10_000 }).toBe(1)
        expect(s.logs.find('cleanup failed')[0]).toMatchObject({ err: { message: 'release failed' } })
      } finally {
        await s.close()
      }
    })
  })

  describe("a filter's own reply on a WebSocket upgrade", () => {
    it.each(['open', 'closed'] as const)('a CR/LF in a header of its reply cannot split the head (failMode %s): 500, counted, never passed upstream', async (failMode) => {
      const splitter: Filter = {
        name: 'splitter',
        onRequest: () => errorReply('UNAUTHENTICATED', 'no', undefined, { 'www-authenticate': 'Bearer\r\nset-cookie: injected=1' }),
      }
      const s = await startWith(splitter, backend, [{ name: 'request-id' }, { name: 'tenant', failMode }])
      try {
        const r = await refusal(s.port)
        expect(r.headers['set-cookie']).toBeUndefined()
        expect(r.status).toBe(500)
        expect((JSON.parse(r.body) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('INTERNAL_SERVER_ERROR')
        expect(r.headers['x-request-id']).toBeDefined()
        expect(await filterErrors(s.metrics, 'splitter')).toMatch(/ 1$/)
        await expect.poll(() => s.logs.find('filter answered with a reply HTTP cannot carry').length, { timeout: 10_000 }).toBe(1)
        await expect.poll(() => s.logs.find('access').length, { timeout: 10_000 }).toBe(1)
        expect(s.logs.find('access')[0]).toMatchObject({ status: 500, code: 'INTERNAL_SERVER_ERROR', filter: 'splitter' })
      } finally {
        await s.close()
      }
    })

    const malformed: [string, () => unknown][] = [
      ['null', () => null],
      ['a header name with a space', () => ({ status: 403, headers: { 'x bad': 'v' }, body: 'no' })],
      ['a numeric header value', () => ({ status: 429, headers: { 'retry-after': 5 }, body: 'slow' })],
      ['status 101', () => ({ status: 101, headers: { upgrade: 'websocket' }, body: '' })],
    ]
    it.each(malformed)('a decision of %s gets the client a 500, not a cut socket or a bogus head', async (_n, make) => {
      const f: Filter = { name: 'odd', onRequest: () => make() as Decision }
      const s = await startWith(f, backend, [{ name: 'tenant' }])
      try {
        const r = await refusal(s.port)
        expect(r.status).toBe(500)
        expect(await filterErrors(s.metrics, 'odd')).toMatch(/ 1$/)
      } finally {
        await s.close()
      }
    })

    it('a well-formed reply (a header list included) is still sent as the filter made it', async () => {
      const f: Filter = { name: 'fine', onRequest: () => errorReply('RATE_LIMITED', 'slow down', undefined, { 'retry-after': '5', vary: ['a', 'b'] }) }
      const s = await startWith(f, backend, [{ name: 'tenant' }])
      try {
        const r = await refusal(s.port)
        expect(r.status).toBe(429)
        expect(r.headers['retry-after']).toBe('5')
        expect(await filterErrors(s.metrics, 'fine')).toBe('')
      } finally {
        await s.close()
      }
    })
  })

  it("lines logged after the request-id and tenant filters ran carry the request's id and tenant, even when an earlier line was logged", async () => {
    const f: Filter = {
      name: 'early',
      onRequest: (ctx) => {
        ctx.log.warn('logged before the request id was assigned')
        ctx.tenant = 'acme'
      },
      onResponse: () => {
        throw new Error('response phase failed')
      },
    }
    const s = await startWith(f, backend, [
      { name: 'tenant', failMode: 'open' },
      { name: 'request-id', trustIncoming: false },
    ])
    try {
      const r = await request(`${s.url}/x`, { headersTimeout: 15_000 })
      await r.body.text()
      expect(r.statusCode).toBe(200)
      const id = r.headers['x-request-id']
      expect(typeof id).toBe('string')
      await expect.poll(() => s.logs.find('filter error').length, { timeout: 10_000 }).toBe(1)
      expect(s.logs.find('filter error')[0]).toMatchObject({ reqId: id, tenant: 'acme', filter: 'early' })
      await expect.poll(() => s.logs.find('access').length, { timeout: 10_000 }).toBe(1)
      expect(s.logs.find('access')[0]).toMatchObject({ reqId: id, tenant: 'acme' })
    } finally {
      await s.close()
    }
  })
})

describe('credentials in log lines (sweep19c)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it("a filter logging the request's headers writes no cookie or proxy credential in clear", async () => {
    const f: Filter = {
      name: 'debug-headers',
      onRequest: (ctx) => {
        ctx.log.info({ headers: ctx.req.headers }, 'request headers')
        ctx.log.info({ req: { headers: ctx.req.headers }, res: { headers: { 'set-cookie': ['sid=RESPONSE-SECRET'] } } }, 'nested headers')
      },
    }
    const s = await startWith(f, backend, [{ name: 'tenant' }])
    try {
      const r = await request(`${s.url}/x`, {
        headersTimeout: 15_000,
        headers: { cookie: 'sid=COOKIE-SECRET', 'proxy-authorization': 'Basic PROXY-SECRET', authorization: 'Bearer AUTH-SECRET', 'x-trace': 'kept' },
      })
      await r.body.text()
      expect(r.statusCode).toBe(200)
      await expect.poll(() => s.logs.find('nested headers').length, { timeout: 10_000 }).toBe(1)
      const raw = s.logs.raw.join('\n')
      for (const secret of ['COOKIE-SECRET', 'PROXY-SECRET', 'AUTH-SECRET', 'RESPONSE-SECRET']) expect(raw).not.toContain(secret)
      expect(s.logs.find('request headers')[0]).toMatchObject({ headers: { cookie: '[redacted]', 'proxy-authorization': '[redacted]', authorization: '[redacted]', 'x-trace': 'kept' } })
    } finally {
      await s.close()
    }
  })
})
