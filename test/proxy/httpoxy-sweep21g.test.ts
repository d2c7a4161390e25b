// httpoxy (CVE-2016-5385 and kin): a request's `Proxy` header becomes HTTP_PROXY in CGI-style
// backends (PHP-FPM, Go net/http/cgi, Python wsgiref-CGI), whose HTTP clients then send their
// outbound calls through the proxy the client named. The gateway relayed it; nginx, HAProxy and
// Apache advise dropping it at the edge. Through a real igw and an echo backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
beforeAll(async () => {
  backend = await startRawBackend(echoHandler)
  proxy = await startTestProxy({ routes: [{ name: 'all', match: { pathPrefix: '/' }, upstream: backend.url, type: 'http' }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

describe('the Proxy request header', () => {
  it('is not relayed to the backend; other headers are, in order', async () => {
    const res = await request(`${proxy.url}/x`, { headers: { 'x-before': '1', proxy: 'http://127.0.0.1:1/', 'x-after': '2' } })
    expect(res.statusCode).toBe(200)
    const seen = (await res.body.json()) as { headers: Record<string, string>; rawHeaders: string[] }
    expect(seen.headers.proxy).toBeUndefined()
    const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
    expect(names.indexOf('x-before')).toBeGreaterThanOrEqual(0)
    expect(names.indexOf('x-after')).toBeGreaterThan(names.indexOf('x-before'))
  })
})
