// HTTP/1.1 edges Node's parser answers for us unless told otherwise: oversized heads, malformed
// requests, slow heads, unknown expectations, and a 204 that carries a Content-Length. Through a
// real igw proxy, raw client sockets and a raw TCP backend that records what it was sent.
import { afterEach, describe, expect, it } from 'vitest'
import { connect } from 'node:net'
import { request } from 'undici'
import { rawExchange, startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

type GqlError = { errors: { message: string; extensions: { code: string } }[] }

function errorOf(raw: string): GqlError['errors'][0] {
  return (JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as GqlError).errors[0]!
}

const cleanups: (() => Promise<unknown>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

async function setup(doc: Partial<Parameters<typeof startTestProxy>[0]> = {}, answer = 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'): Promise<{ up: RawTcpUpstream; proxy: TestProxy }> {
  const up = await startRawTcpUpstream((sock) => sock.write(answer))
  cleanups.push(up.close)
  const proxy = await startTestProxy({ ...doc, routes: [{ name: 'all', match: { pathPrefix: '/' }, upstream: up.url, type: 'http' }] })
  cleanups.push(() => proxy.close())
  return { up, proxy }
}

async function requestsWithStatus(proxy: TestProxy, status: number): Promise<number> {
  return metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_requests_total', `status="${status}"`)
}

describe('requests node:http refuses before our handler', () => {
  it('a head over listener.maxHeaderBytes is 431 with the GraphQL error shape, counted and logged', async () => {
    const { up, proxy } = await setup({ listener: { maxHeaderBytes: 2048 } })
    const raw = (await rawExchange(proxy.port, `GET /a HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(4096)}\r\n\r\n`, 5000)).toString('latin1')
    expect(raw.startsWith('HTTP/1.1 431 ')).toBe(true)
    expect(errorOf(raw).extensions.code).toBe('REQUEST_HEADER_FIELDS_TOO_LARGE')
    // A request line alone past the limit is the same refusal (Node counts it with the head).
    const longUrl = (await rawExchange(proxy.port, `GET /${'u'.repeat(4096)} HTTP/1.1\r\nhost: x\r\n\r\n`, 5000)).toString('latin1')
    expect(longUrl.startsWith('HTTP/1.1 431 ')).toBe(true)
    expect(up.heads).toEqual([])
    await expect.poll(() => requestsWithStatus(proxy, 431), { timeout: 10_000 }).toBe(2)
    await expect.poll(() => proxy.logs.lines.filter((l) => l.status === 431 && l.code === 'REQUEST_HEADER_FIELDS_TOO_LARGE').length, { timeout: 10_000 }).toBe(2)
  })

  it('a request the parser cannot read is 400 BAD_REQUEST, counted and logged with the parser code', async () => {
    const { up, proxy } = await setup()
    const raw = (await rawExchange(proxy.port, 'GET /a HTTP/1.1\r\nbad header line\r\n\r\n', 5000)).toString('latin1')
    expect(raw.startsWith('HTTP/1.1 400 ')).toBe(true)
    expect(errorOf(raw).extensions.code).toBe('BAD_REQUEST')
    expect(up.heads).toEqual([])
    await expect.poll(() => requestsWithStatus(proxy, 400), { timeout: 10_000 }).toBe(1)
    await expect.poll(() => proxy.logs.lines.some((l) => l.status === 400), { timeout: 10_000 }).toBe(true)
    const line = proxy.logs.lines.find((l) => l.status === 400)
    expect(line?.code).toBe('BAD_REQUEST')
    expect(String(line?.parseError)).toMatch(/^HPE_/)
  })

  it('a head that does not arrive within listener.headersTimeoutMs is answered 408 near that time, not after Node’s 30 s check interval', async () => {
    const { up, proxy } = await setup({ listener: { headersTimeoutMs: 1000 } })
    const started = Date.now()
    const raw = await new Promise<string>((resolve, reject) => {
      const s = connect(proxy.port, '127.0.0.1')
      const chunks: Buffer[] = []
      const t = setTimeout(() => {
        s.destroy()
        reject(new Error(`no answer within 15 s: ${Buffer.concat(chunks).toString('latin1')}`))
      }, 15_000)
      s.on('data', (d: Buffer) => chunks.push(d))
      s.on('error', () => {})
      s.on('close', () => {
        clearTimeout(t)
        resolve(Buffer.concat(chunks).toString('latin1'))
      })
      s.write('GET /a HTTP/1.1\r\nhost: x\r\n') // the head never ends
    })
    expect(Date.now() - started).toBeLessThan(15_000)
    expect(raw.startsWith('HTTP/1.1 408 ')).toBe(true)
    expect(errorOf(raw).extensions.code).toBe('REQUEST_TIMEOUT')
    expect(up.heads).toEqual([])
    await expect.poll(() => requestsWithStatus(proxy, 408), { timeout: 10_000 }).toBe(1)
  })

  it('an Expect other than 100-continue is 417 with the GraphQL error shape, counted, and the upstream never sees it', async () => {
    const { up, proxy } = await setup()
    const raw = (await rawExchange(proxy.port, 'POST /a HTTP/1.1\r\nhost: x\r\nexpect: x-fancy\r\ncontent-length: 2\r\n\r\nhi', 5000)).toString('latin1')
    expect(raw.startsWith('HTTP/1.1 417 ')).toBe(true)
    expect(errorOf(raw).extensions.code).toBe('EXPECTATION_FAILED')
    expect(up.heads).toEqual([])
    await expect.poll(() => requestsWithStatus(proxy, 417), { timeout: 10_000 }).toBe(1)
    await expect.poll(() => proxy.logs.lines.some((l) => l.status === 417 && l.code === 'EXPECTATION_FAILED'), { timeout: 10_000 }).toBe(true)
    // 100-continue itself still passes.
    const ok = (await rawExchange(proxy.port, 'POST /a HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi', 5000)).toString('latin1')
    expect(ok).toMatch(/HTTP\/1\.1 200 /)
  })
})

describe('responses', () => {
  it('an upstream 204 with a Content-Length reaches the client without one (RFC 9110 §8.6)', async () => {
    const { proxy } = await setup({}, 'HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-kept: yes\r\n\r\n')
    const raw = (await rawExchange(proxy.port, 'DELETE /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n', 5000)).toString('latin1')
    expect(raw.startsWith('HTTP/1.1 204 ')).toBe(true)
    const head = raw.slice(0, raw.indexOf('\r\n\r\n')).toLowerCase()
    expect(head).toContain('x-kept: yes')
    expect(head).not.toMatch(/content-length/)
    expect(head).not.toMatch(/transfer-encoding/)
  })
})
