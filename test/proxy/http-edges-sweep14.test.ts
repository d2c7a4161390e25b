// Request-target and header edge cases at the HTTP/1.1 proxy boundary (RFC 9110/9112), through
// a real igw proxy to a raw TCP backend that records exactly what it was sent.
import { afterEach, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { rawExchange, startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { traceIdOf } from '../../proxy/log.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

function errorOf(raw: string): GqlError['errors'][0] {
  return (JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as GqlError).errors[0]!
}

/** Header names (lower-case) → values of a raw request head. */
function headerMap(head: string): Map<string, string[]> {
  const m = new Map<string, string[]>()
  for (const line of head.split('\r\n').slice(1)) {
    const c = line.indexOf(':')
    const name = line.slice(0, c).toLowerCase()
    m.set(name, [...(m.get(name) ?? []), line.slice(c + 1).trim()])
  }
  return m
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

async function setup(doc: Partial<Parameters<typeof startTestProxy>[0]> = {}): Promise<{ up: RawTcpUpstream; proxy: TestProxy }> {
  const up = await startRawTcpUpstream((sock) => sock.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'))
  cleanups.push(up.close)
  const proxy = await startTestProxy({
    mode: 'ingress',
    ...doc,
    routes: [
      { name: 'gql', match: { pathPrefix: '/graphql' }, upstream: up.url, type: 'graphql' },
      { name: 'http', match: { pathPrefix: '/' }, upstream: up.url, type: 'http' },
    ],
  })
  cleanups.push(() => proxy.close())
  return { up, proxy }
}

describe('HTTP/1.1 request edges', () => {
  it('a request target with a fragment ("#") is refused with 400 before any filter or the upstream sees it', async () => {
    const { up, proxy } = await setup()
    // The backend drops everything from "#" on: it would run n = 1000 (the default) while every
    // filter (cost, cache key, persisted checks) read the variables after the "#" (n = 1).
    const gql = (await rawExchange(proxy.port, 'GET /graphql?query=query($n:Int=1000){items(first:$n)}#&variables={"n":1} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n', 5000)).toString('latin1')
    expect(gql.startsWith('HTTP/1.1 400 ')).toBe(true)
    expect(errorOf(gql).extensions.code).toBe('BAD_REQUEST')
    expect(errorOf(gql).message).toMatch(/fragment/)
    const http = (await rawExchange(proxy.port, 'GET /files/a?x=1#frag HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n', 5000)).toString('latin1')
    expect(http.startsWith('HTTP/1.1 400 ')).toBe(true)
    expect(up.heads).toEqual([])
    // Without a fragment the same requests pass.
    const ok = (await rawExchange(proxy.port, 'GET /files/a?x=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n', 5000)).toString('latin1')
    expect(ok.startsWith('HTTP/1.1 200 ')).toBe(true)
    expect(up.heads.map((h) => h.split('\r\n')[0])).toEqual(['GET /files/a?x=1 HTTP/1.1'])
    await expect.poll(async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_requests_total', 'status="400"'), { timeout: 10_000 }).toBe(2)
  })

  it('more than one Host header is a 400 (RFC 9112 §3.2), not routed by the first', async () => {
    const { up, proxy } = await setup()
    const two = (await rawExchange(proxy.port, 'GET /a HTTP/1.1\r\nHost: internal.example\r\nhost: public.example\r\nconnection: close\r\n\r\n', 5000)).toString('latin1')
    expect(two.startsWith('HTTP/1.1 400 ')).toBe(true)
    expect(errorOf(two).message).toMatch(/Host/)
    expect(up.heads).toEqual([])
    const one = (await rawExchange(proxy.port, 'GET /a HTTP/1.1\r\nHOST: public.example\r\nconnection: close\r\n\r\n', 5000)).toString('latin1')
    expect(one.startsWith('HTTP/1.1 200 ')).toBe(true)
    expect(headerMap(up.heads[0]!).get('host')).toEqual(['public.example'])
  })

  const spoofed =
    'forwarded: for=203.0.113.66;proto=https;host=admin.example\r\n' +
    'x-real-ip: 203.0.113.66\r\n' +
    'x-forwarded-for: 203.0.113.66\r\n' +
    'x-forwarded-proto: https\r\n' +
    'x-forwarded-host: admin.example\r\n' +
    'x-forwarded-port: 443\r\n' +
    'x-forwarded-prefix: /evil\r\n' +
    'x-forwarded-ssl: on\r\n'

  it('at the edge (forwarded.trustIncoming: false) a client cannot pass Forwarded, X-Real-IP or any X-Forwarded-* of its own', async () => {
    const { up, proxy } = await setup({ forwarded: { trustIncoming: false } })
    const res = (await rawExchange(proxy.port, `GET /a HTTP/1.1\r\nhost: app.example\r\n${spoofed}x-kept: yes\r\nconnection: close\r\n\r\n`, 5000)).toString('latin1')
    expect(res.startsWith('HTTP/1.1 200 ')).toBe(true)
    const h = headerMap(up.heads[0]!)
    for (const name of ['forwarded', 'x-real-ip', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-ssl']) expect(h.get(name), name).toBeUndefined()
    expect(h.get('x-forwarded-for')).toEqual(['127.0.0.1'])
    expect(h.get('x-forwarded-proto')).toEqual(['http'])
    expect(h.get('x-forwarded-host')).toEqual(['app.example'])
    expect(h.get('x-kept')).toEqual(['yes'])
  })

  it('behind a trusted load balancer (trustIncoming: true) those headers are passed on, X-Forwarded-For appended', async () => {
    const { up, proxy } = await setup({ forwarded: { trustIncoming: true } })
    const res = (await rawExchange(proxy.port, `GET /a HTTP/1.1\r\nhost: app.example\r\n${spoofed}connection: close\r\n\r\n`, 5000)).toString('latin1')
    expect(res.startsWith('HTTP/1.1 200 ')).toBe(true)
    const h = headerMap(up.heads[0]!)
    expect(h.get('forwarded')).toEqual(['for=203.0.113.66;proto=https;host=admin.example'])
    expect(h.get('x-real-ip')).toEqual(['203.0.113.66'])
    expect(h.get('x-forwarded-port')).toEqual(['443'])
    expect(h.get('x-forwarded-prefix')).toEqual(['/evil'])
    expect(h.get('x-forwarded-for')).toEqual(['203.0.113.66, 127.0.0.1'])
    expect(h.get('x-forwarded-proto')).toEqual(['https'])
  })

  it('the access log takes the trace id only from a well-formed W3C traceparent (the header itself still passes on untouched)', async () => {
    const { up, proxy } = await setup()
    const cases: [string, string | undefined][] = [
      ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '4bf92f3577b34da6a3ce929d0e0e4736'],
      // Before, each of these was logged as a "trace id" that joins the line to no trace:
      ['00-<script>alert(1)</script>xxxxxxx-00f067aa0ba902b7-01', undefined], // not hex
      ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', undefined], // all-zero trace id
      ['00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', undefined], // upper-case hex
      ['00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', undefined], // all-zero parent id
      ['ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', undefined], // version ff
      ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, 00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-00f067aa0ba902b7-01', undefined], // two headers
      ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01zz', undefined], // version 00 is exactly 55 characters
    ]
    for (const [i, [tp]] of cases.entries()) {
      const res = (await rawExchange(proxy.port, `GET /trace/${i} HTTP/1.1\r\nhost: x\r\ntraceparent: ${tp}\r\nconnection: close\r\n\r\n`, 5000)).toString('latin1')
      expect(res.startsWith('HTTP/1.1 200 ')).toBe(true)
      expect(headerMap(up.heads[i]!).get('traceparent')).toEqual([tp])
    }
    await expect.poll(() => proxy.logs.find('access').length, { timeout: 10_000 }).toBe(cases.length)
    const byPath = new Map(proxy.logs.find('access').map((l) => [l.path, l.traceId]))
    for (const [i, [tp, id]] of cases.entries()) expect(byPath.get(`/trace/${i}`), tp).toBe(id)
    // A later version may append fields after a "-"; its first four parts read the same.
    expect(traceIdOf('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever')).toBe('4bf92f3577b34da6a3ce929d0e0e4736')
    expect(traceIdOf('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x')).toBeUndefined()
  })
})
