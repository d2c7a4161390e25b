// How filters edit headers (ctx.addResponseHeader / ctx.setUpstreamHeader), through a real
// WorkerProxy, a real node:http backend and a real undici client. The defects:
// - addResponseHeader called in the response phase was silently lost (the head was built from the
//   request phase's additions before the response phase ran);
// - a filter's Set-Cookie replaced the backend's (and a second one of the filter's its first):
//   Set-Cookie is never combined nor replaced (RFC 6265 §3), every one is its own header line;
// - setUpstreamHeader('x-forwarded-for' | 'x-forwarded-proto' | 'x-forwarded-host') sent a second
//   header beside the proxy's own (the backend read "filter, proxy" joined), instead of the value;
// - setUpstreamHeader('expect', …) was accepted and undici refused the request: a 502 blaming
//   the backend instead of the filter's failure;
// - the request-id filter's `header` was not checked at load: a name HTTP cannot carry or one the
//   proxy owns failed every request instead of the config.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Filter } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { problems } from '../helpers/config.ts'
import { LogCapture } from '../helpers/proxy.ts'

/** Two filters of the test's own, in chain order (first = outer), on an http route. */
async function startWith(first: Filter, second: Filter, backend: RawBackend, failMode: 'open' | 'closed' = 'closed') {
  const mods: FilterModules = { ...filterModules, 'request-id': { create: () => first }, tenant: { create: () => second } }
  const config = validateConfig({
    log: { level: 'info' },
    routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'request-id', failMode }, { name: 'tenant', failMode }] }],
  })
  const logs = new LogCapture()
  const metrics = new ProxyMetrics(new Registry())
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics, shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  const url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`
  const filterErrors = async (name: string): Promise<number> => {
    const text = await metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
    const m = new RegExp(`igw_filter_errors_total\\{filter="${name}"\\} (\\d+)`).exec(text)
    return m === null ? 0 : Number(m[1])
  }
  return { url, logs, filterErrors, close: () => proxy.drain(100) }
}

const idle: Filter = { name: 'idle' }

/** Backend: two cookies of its own, and the request's raw headers as the body. */
function cookieEcho(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    const body = JSON.stringify({ rawHeaders: req.rawHeaders, headers: req.headers })
    res.writeHead(200, [
      ['content-type', 'application/json'],
      ['set-cookie', 'be1=a; Path=/'],
      ['set-cookie', 'be2=b; Path=/'],
      ['x-backend', 'yes'],
      ['content-length', String(Buffer.byteLength(body))],
    ].flat())
    res.end(body)
  })
}

type Echo = { rawHeaders: string[]; headers: Record<string, string> }

function cookies(h: Record<string, string | string[] | undefined>): string[] {
  const v = h['set-cookie']
  return v === undefined ? [] : Array.isArray(v) ? v : [v]
}

function rawValues(raw: string[], name: string): string[] {
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!)
  return out
}

describe('filter header edits (sweep18)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(cookieEcho)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('addResponseHeader in onResponse reaches the client (sync and async filters, proxied response)', async () => {
    const outer: Filter = {
      name: 'outer',
      onResponse: async (ctx) => {
        await new Promise((r) => setTimeout(r, 5))
        ctx.addResponseHeader('X-Outer', 'async')
      },
    }
    const inner: Filter = { name: 'inner', onResponse: (ctx) => ctx.addResponseHeader('X-Inner', 'sync') }
    const s = await startWith(outer, inner, backend)
    try {
      const res = await request(`${s.url}/x`)
      await res.body.json()
      expect(res.statusCode).toBe(200)
      expect(res.headers['x-inner']).toBe('sync')
      expect(res.headers['x-outer']).toBe('async')
      expect(res.headers['x-backend']).toBe('yes')
      expect(await s.filterErrors('outer')).toBe(0)
    } finally {
      await s.close()
    }
  })

  it('addResponseHeader in onResponse replaces an upstream header of that name', async () => {
    const outer: Filter = { name: 'outer', onResponse: (ctx) => ctx.addResponseHeader('x-backend', 'edited') }
    const s = await startWith(outer, idle, backend)
    try {
      const res = await request(`${s.url}/x`)
      await res.body.json()
      expect(res.headers['x-backend']).toBe('edited')
    } finally {
      await s.close()
    }
  })

  it('addResponseHeader in onResponse reaches a local reply (an inner filter refused)', async () => {
    const refusing: Filter = { name: 'refusing', onRequest: () => errorReply('UNKNOWN_TENANT', 'no') }
    const t = await startWith({ name: 'outer', onResponse: (ctx) => ctx.addResponseHeader('x-why', 'policy') }, refusing, backend)
    try {
      const res = await request(`${t.url}/x`)
      await res.body.json()
      expect(res.statusCode).toBe(403)
      expect(res.headers['x-why']).toBe('policy')
    } finally {
      await t.close()
    }
  })

  it.each([
    ['without a response-phase filter (direct relay)', false],
    ['with a response-phase filter', true],
  ])('Set-Cookie from a filter is appended to the backend\'s, each call its own header line (%s)', async (_label, withResponsePhase) => {
    const adder: Filter = {
      name: 'adder',
      onRequest: (ctx) => {
        ctx.addResponseHeader('Set-Cookie', 'gw1=x; Path=/; HttpOnly')
        ctx.addResponseHeader('set-cookie', 'gw2=y; Path=/')
        return undefined
      },
    }
    const second: Filter = withResponsePhase ? { name: 'watcher', onResponse: () => undefined } : idle
    const s = await startWith(adder, second, backend)
    try {
      const res = await request(`${s.url}/x`)
      await res.body.json()
      expect(res.statusCode).toBe(200)
      expect(cookies(res.headers).sort()).toEqual(['be1=a; Path=/', 'be2=b; Path=/', 'gw1=x; Path=/; HttpOnly', 'gw2=y; Path=/'])
    } finally {
      await s.close()
    }
  })

  it('Set-Cookie added in onResponse is appended to the backend\'s too', async () => {
    const late: Filter = {
      name: 'late',
      onResponse: (ctx) => {
        ctx.addResponseHeader('set-cookie', 'late1=1')
        ctx.addResponseHeader('set-cookie', 'late2=2')
      },
    }
    const s = await startWith(late, idle, backend)
    try {
      const res = await request(`${s.url}/x`)
      await res.body.json()
      expect(cookies(res.headers).sort()).toEqual(['be1=a; Path=/', 'be2=b; Path=/', 'late1=1', 'late2=2'])
    } finally {
      await s.close()
    }
  })

  it('on a local reply every Set-Cookie a filter added is sent', async () => {
    const refusing: Filter = {
      name: 'refusing',
      onRequest: (ctx) => {
        ctx.addResponseHeader('set-cookie', 'a=1')
        ctx.addResponseHeader('set-cookie', 'b=2')
        return errorReply('UNKNOWN_TENANT', 'no')
      },
    }
    const t = await startWith(idle, refusing, backend)
    try {
      const res = await request(`${t.url}/x`)
      await res.body.json()
      expect(res.statusCode).toBe(403)
      expect(cookies(res.headers).sort()).toEqual(['a=1', 'b=2'])
    } finally {
      await t.close()
    }
  })

  it.each([['x-forwarded-for', '203.0.113.7'], ['x-forwarded-proto', 'https'], ['x-forwarded-host', 'api.example.com']])(
    'setUpstreamHeader(%j) controls the value the backend gets: one header, the filter\'s value',
    async (name, value) => {
      const edge: Filter = { name: 'edge', onRequest: (ctx) => void ctx.setUpstreamHeader(name, value) }
      const s = await startWith(edge, idle, backend)
      try {
        const res = await request(`${s.url}/x`, { headers: { [name]: 'from-client' } })
        const echo = (await res.body.json()) as Echo
        expect(res.statusCode).toBe(200)
        expect(rawValues(echo.rawHeaders, name)).toEqual([value])
      } finally {
        await s.close()
      }
    },
  )

  it('setUpstreamHeader("x-forwarded-for", null) removes it; without an edit the proxy appends as before', async () => {
    const edge: Filter = { name: 'edge', onRequest: (ctx) => void ctx.setUpstreamHeader('X-Forwarded-For', null) }
    const s = await startWith(edge, idle, backend)
    try {
      const res = await request(`${s.url}/x`, { headers: { 'x-forwarded-for': '198.51.100.1' } })
      const echo = (await res.body.json()) as Echo
      expect(rawValues(echo.rawHeaders, 'x-forwarded-for')).toEqual([])
      expect(rawValues(echo.rawHeaders, 'x-forwarded-proto')).toEqual(['http'])
    } finally {
      await s.close()
    }
    const t = await startWith(idle, idle, backend)
    try {
      const res = await request(`${t.url}/x`, { headers: { 'x-forwarded-for': '198.51.100.1' } })
      const echo = (await res.body.json()) as Echo
      expect(rawValues(echo.rawHeaders, 'x-forwarded-for')).toEqual(['198.51.100.1, 127.0.0.1'])
    } finally {
      await t.close()
    }
  })

  it('setUpstreamHeader("expect", …) fails the filter (500, counted under its name), not the upstream (502)', async () => {
    const bad: Filter = { name: 'bad', onRequest: (ctx) => void ctx.setUpstreamHeader('Expect', '100-continue') }
    const s = await startWith(idle, bad, backend)
    try {
      const before = backend.requests.length
      const res = await request(`${s.url}/x`)
      const body = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
      expect(res.statusCode).toBe(500)
      expect(body.errors[0]!.message).toBe('filter "bad" failed')
      expect(await s.filterErrors('bad')).toBe(1)
      expect(backend.requests.length).toBe(before)
      expect(s.logs.find('upstream request failed')).toHaveLength(0)
    } finally {
      await s.close()
    }
  })
})

describe('request-id filter header option is checked at load (sweep18)', () => {
  const load = (header: unknown) => () =>
    validateConfig({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant', defaultTenant: 'acme', allowUnlisted: true }, { name: 'request-id', header }] }] })

  it.each(['bad name', 'x-id:', '', 'x-ïd', 'x(id)'])('a name HTTP cannot carry (%j) is refused with its path', (header) => {
    const p = problems(load(header))
    expect(p).toHaveLength(1)
    expect(p[0]).toMatch(/^routes\[0\]\.filters\[1\]\.header: expected an HTTP header name/)
  })

  it.each(['Host', 'content-length', 'connection', 'transfer-encoding', 'upgrade', 'te', 'keep-alive', 'proxy-authorization', 'expect'])(
    'a header the proxy owns (%j) is refused with its path',
    (header) => {
      const p = problems(load(header))
      expect(p).toHaveLength(1)
      expect(p[0]).toMatch(/^routes\[0\]\.filters\[1\]\.header: /)
      expect(p[0]).toContain('the proxy')
    },
  )

  it('a good name is accepted and lower-cased', () => {
    const cfg = load('X-Correlation-ID')()
    expect((cfg.routes[0]!.filters[1] as { header: string }).header).toBe('x-correlation-id')
  })
})

describe('response framing headers a filter writes in any case (sweep18)', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(cookieEcho)
  })
  afterAll(async () => {
    await backend?.close()
  })

  /** Two requests on one keep-alive connection, raw: the second only parses if the first's framing was right. */
  async function twoOnOneConnection(url: string): Promise<string> {
    const { port } = new URL(url)
    const req = 'GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
    return (await rawExchange(Number(port), req, 10_000)).toString('latin1')
  }

  it('a LocalReply with a Node-style "Content-Length" / "Transfer-Encoding" goes out with one right length', async () => {
    const replying: Filter = {
      name: 'replying',
      onRequest: () => ({ status: 503, headers: { 'Content-Type': 'text/plain', 'Content-Length': '2', 'Transfer-Encoding': 'chunked', 'Retry-After': '5' }, body: 'overloaded' }),
    }
    const s = await startWith(idle, replying, backend)
    try {
      const text = await twoOnOneConnection(s.url)
      const heads = text.split('HTTP/1.1 ').slice(1)
      expect(heads).toHaveLength(2)
      for (const h of heads) {
        expect(h.startsWith('503')).toBe(true)
        expect(h.match(/^content-length: .*$/gim)).toEqual(['content-length: 10'])
        expect(h).not.toMatch(/^transfer-encoding:/im)
        expect(h).toMatch(/^Retry-After: 5\r$/m)
        expect(h.endsWith('\r\n\r\noverloaded')).toBe(true)
      }
    } finally {
      await s.close()
    }
  })

  it('res.headers["Content-Length"] set by a response filter does not sit beside the real length', async () => {
    const rewriting: Filter = {
      name: 'rewriting',
      onResponse: (_ctx, res) => {
        res.headers['Content-Length'] = '3'
        res.headers['X-Seen'] = 'yes'
      },
    }
    const s = await startWith(rewriting, idle, backend)
    try {
      const text = await twoOnOneConnection(s.url)
      const heads = text.split('HTTP/1.1 ').slice(1)
      expect(heads).toHaveLength(2)
      for (const h of heads) {
        expect(h.startsWith('200')).toBe(true)
        const lengths = h.match(/^content-length: (\d+)\r$/gim)!
        expect(lengths).toHaveLength(1)
        const body = h.slice(h.indexOf('\r\n\r\n') + 4)
        expect(lengths[0]!.trim().toLowerCase()).toBe(`content-length: ${Buffer.byteLength(body, 'latin1')}`)
        expect(JSON.parse(body)).toHaveProperty('rawHeaders')
      }
    } finally {
      await s.close()
    }
  })
})
