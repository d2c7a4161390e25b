// An upstream status line with a code no HTTP client reads (600, 999; 099 below the interim
// range): llhttp takes any three digits and node:http writes any status up to 999, so it reached
// the client as it came. Envoy answers such a response 502. Real igw proxy, a raw TCP backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

let up: RawTcpUpstream
let proxy: TestProxy
beforeAll(async () => {
  // The path names the status line to answer with: …/s/600 → `HTTP/1.1 600 X`.
  up = await startRawTcpUpstream((sock, _head, path) => sock.write(`HTTP/1.1 ${/\/s\/(\d+)/.exec(path)![1]} X\r\ncontent-length: 2\r\n\r\nok`))
  proxy = await startTestProxy({
    routes: [
      { name: 'g', match: { pathPrefix: '/graphql' }, upstream: up.url, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'cache', requireTenant: false }] },
      { name: 'h', match: { pathPrefix: '/' }, upstream: up.url, type: 'http' },
    ],
  })
})
afterAll(async () => {
  await proxy?.close()
  await up?.close()
})

async function upstreamErrors(route: string): Promise<number> {
  return metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_proxy_errors_total', `route="${route}",code="UPSTREAM_UNAVAILABLE"`)
}

describe('an upstream status outside 100–599', () => {
  it.each(['600', '999', '099'])('%s is a 502 UPSTREAM_UNAVAILABLE naming it, counted and logged', async (status) => {
    const before = await upstreamErrors('h')
    const res = await request(`${proxy.url}/s/${status}`)
    expect(res.statusCode).toBe(502)
    const err = ((await res.body.json()) as GqlError).errors[0]!
    expect(err.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
    expect(err.message).toContain(`invalid HTTP status ${Number(status)}`)
    await expect.poll(() => upstreamErrors('h'), { timeout: 5000 }).toBe(before + 1)
    await expect.poll(() => proxy.logs.lines.some((l) => l.msg === 'upstream request failed' && JSON.stringify(l.err).includes(`invalid HTTP status ${Number(status)}`)), { timeout: 5000 }).toBe(true)
  })

  it('on a route whose response filters run (they never see it as an answer)', async () => {
    const res = await request(`${proxy.url}/graphql/s/600?query=%7Bhello%7D`)
    expect(res.statusCode).toBe(502)
    expect(((await res.body.json()) as GqlError).errors[0]!.extensions.code).toBe('UPSTREAM_UNAVAILABLE')
  })

  it('599 is relayed as before', async () => {
    const res = await request(`${proxy.url}/s/599`)
    expect(res.statusCode).toBe(599)
    expect(await res.body.text()).toBe('ok')
  })
})
