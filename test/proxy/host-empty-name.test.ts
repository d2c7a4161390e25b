// A Host with an empty name (`Host: :80`, or `GET http://:80/a`) and one with two dots in a row
// (`admin.example.com..`) passed the Host check: the first went to the backend as it was (RFC 9110
// §4.2.1: an http URI with an empty host MUST be rejected as invalid), the second missed the route
// of the name it spells and went to the host-less routes. Both are a 400 now, as nginx answers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
const hosts: (string | undefined)[] = []
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    hosts.push(req.headers.host)
    req.resume()
    res.writeHead(200, { 'content-length': '2' }).end('ok')
  })
  proxy = await startTestProxy({ routes: [{ name: 'any', upstream: backend.url }] })
})
afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const get = async (target: string, host: string) => (await rawExchange(proxy.port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)).toString('latin1')

describe('Host names the proxy refuses', () => {
  it.each([
    ['/a', ':80'],
    ['http://:80/a', 'example.com'],
    ['/a', 'admin.example.com..'],
    ['/a', 'a..b:8080'],
  ])('%s with Host %s: 400, nothing forwarded', async (target, host) => {
    const before = hosts.length
    const reply = await get(target, host)
    expect(reply).toMatch(/^HTTP\/1\.1 400 /)
    expect(reply).toContain('BAD_REQUEST')
    expect(hosts.length).toBe(before)
  })

  it('a name, with or without a port, and a trailing dot (a fully qualified name) still pass', async () => {
    for (const host of ['example.com', 'example.com:8080', 'example.com.', '[::1]:8080']) {
      expect(await get('/a', host), host).toMatch(/^HTTP\/1\.1 200 /)
      expect(hosts.at(-1)).toBe(host)
    }
  })
})
