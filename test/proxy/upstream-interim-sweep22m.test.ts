// An upstream that answers with a 100 Continue nobody asked for (RFC 9110 §15.2 allows it), or a
// 101 to a request that asked no upgrade, is a 502 — undici drops such a connection — that says so.
// It read "closed the connection before its response was complete" while the upstream had closed
// nothing: the operator went after the network. Through a real igw and a raw TCP backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawTcpUpstream, type RawTcpUpstream } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const ANSWERS: Record<string, string> = {
  '/continue': 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok',
  '/switch': 'HTTP/1.1 101 Switching Protocols\r\nupgrade: foo\r\nconnection: upgrade\r\n\r\n',
  '/closed': '',
}

let up: RawTcpUpstream
let proxy: TestProxy
beforeAll(async () => {
  up = await startRawTcpUpstream((sock, _head, path) => {
    const answer = ANSWERS[path] ?? 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'
    // The upstream keeps its connection open (only /closed closes it, with no answer).
    if (path === '/closed') sock.end(answer)
    else sock.write(answer)
  })
  proxy = await startTestProxy({ log: { level: 'error' }, routes: [{ name: 'all', match: { pathPrefix: '/' }, upstream: up.url, type: 'http' }] })
})
afterAll(async () => {
  await proxy?.close()
  await up?.close()
})

async function ask(path: string): Promise<{ status: number; message: string; code: string }> {
  const res = await request(`${proxy.url}${path}`, { method: 'POST', body: 'x' })
  const body = (await res.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
  return { status: res.statusCode, message: body.errors[0]!.message, code: body.errors[0]!.extensions.code }
}

describe('an interim response the gateway does not relay is a 502 that names it', () => {
  it('an unasked-for 100 Continue', async () => {
    const r = await ask('/continue')
    expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(r.message).toContain('100 Continue')
    expect(r.message).not.toContain('closed the connection')
  })

  it('a 101 to a request that asked no upgrade', async () => {
    const r = await ask('/switch')
    expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(r.message).toContain('a protocol switch this request did not ask for')
    expect(r.message).not.toContain('closed the connection')
  })

  it('an upstream that did close early is still named so, and the gateway keeps serving', async () => {
    const r = await ask('/closed')
    expect(r).toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })
    expect(r.message).toContain('closed the connection before its response was complete')
    const ok = await request(`${proxy.url}/fine`)
    expect(ok.statusCode).toBe(200)
    expect(await ok.body.text()).toBe('ok')
  })
})
