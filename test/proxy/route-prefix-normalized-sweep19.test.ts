// Request paths are normalized before routing (percent-escapes of unreserved characters decoded,
// hex in upper case, dot segments removed), but route prefixes were matched as written: a prefix
// `/%7euser` or `/caf%c3%a9` never matched anything (requests arrive as `/~user`, `/caf%C3%A9`)
// and such requests fell to another route or a 404. Prefixes are now spelled the same way.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('route prefixes and normalized request paths', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(`backend saw ${req.url}`)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      routes: [
        { name: 'tilde', match: { pathPrefix: '/%7euser/' }, upstream: backend.url, type: 'http' },
        { name: 'cafe', match: { pathPrefix: '/caf%c3%a9/' }, upstream: backend.url, type: 'http' },
      ],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it.each([
    ['/~user/x', 'tilde'],
    ['/%7Euser/x', 'tilde'],
    ['/caf%C3%A9/menu', 'cafe'],
    ['/caf%c3%a9/menu', 'cafe'],
  ])('%s takes the route whose prefix is written with escapes (%s)', async (path, route) => {
    const r = await request(`${proxy.url}${path}`)
    expect(r.statusCode).toBe(200)
    expect(await r.body.text()).toMatch(/^backend saw /)
    await expect.poll(() => proxy.logs.find('access').some((l) => (l as { route?: string; path?: string }).route === route), { timeout: 5000 }).toBe(true)
  })
})
