// An upstream's HTTP trailers (a checksum, a status after a stream) were dropped: the client got the
// body and nothing after it. They now reach a client that asks for them (`TE: trailers`) when the
// response is chunked and no response filter read or replaced the body — with the upstream's
// Trailer header announcing them. Framing and other fields RFC 9110 §6.5.1 keeps out of trailers
// are not relayed.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { rawExchange, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startWorkerProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: WorkerProxy
let port: number
beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    req.resume()
    const length = req.url === '/direct/length' || req.url === '/phase/length'
    res.writeHead(200, length ? { 'content-type': 'text/plain', 'content-length': '5' } : { 'content-type': 'text/plain', trailer: 'x-checksum' })
    res.write('hello')
    if (!length) res.addTrailers({ 'x-checksum': 'sha256=abc', host: 'evil.example', 'set-cookie': 'a=b' })
    res.end()
  })
  // A response-phase filter that edits the head only: the upstream's bytes still go through as they are.
  const headerOnly: Filter = {
    name: 'header-only',
    onResponse: async (_ctx, res) => {
      res.headers['x-seen'] = '1'
    },
  }
  const modules: FilterModules = { ...filterModules, 'request-id': { create: () => headerOnly } }
  const config = validateConfig({
    log: { level: 'silent' },
    routes: [
      { name: 'direct', match: { pathPrefix: '/direct' }, upstream: backend.url, type: 'http' },
      { name: 'phase', match: { pathPrefix: '/phase' }, upstream: backend.url, type: 'http', filters: [{ name: 'request-id' }] },
    ],
  })
  let url: string
  ;({ proxy, url } = await startWorkerProxy(config, modules))
  port = Number(new URL(url).port)
})
afterAll(async () => {
  await proxy?.drain(500)
  await backend?.close()
})

/** The head's fields and the chunked body's trailer fields of a raw response. */
async function exchange(path: string, extra: string, version = '1.1'): Promise<{ status: string; head: string[]; trailers: string[]; raw: string }> {
  const raw = (await rawExchange(port, `GET ${path} HTTP/${version}\r\nhost: a\r\nconnection: close\r\n${extra}\r\n`)).toString('latin1')
  const end = raw.indexOf('\r\n\r\n')
  const [status, ...head] = raw.slice(0, end).split('\r\n')
  const last = raw.indexOf('\r\n0\r\n', end)
  const trailers = last === -1 ? [] : raw.slice(last + 5, raw.length - 2).split('\r\n').filter((l) => l !== '')
  return { status: status!, head: head.map((l) => l.toLowerCase()), trailers: trailers.map((l) => l.toLowerCase()), raw }
}

it.each(['/direct', '/phase'])('%s: a client that sends TE: trailers gets the upstream trailers, announced, framing fields left out', async (path) => {
  const r = await exchange(path, 'te: trailers\r\n')
  expect(r.status).toBe('HTTP/1.1 200 OK')
  expect(r.head).toContain('trailer: x-checksum')
  expect(r.head).toContain('transfer-encoding: chunked')
  expect(r.trailers).toEqual(['x-checksum: sha256=abc'])
})

it('a client that did not ask for trailers gets none, nor the announcement', async () => {
  const r = await exchange('/direct', '')
  expect(r.status).toBe('HTTP/1.1 200 OK')
  expect(r.head.some((l) => l.startsWith('trailer:'))).toBe(false)
  expect(r.trailers).toEqual([])
})

it.each(['/direct/length', '/phase/length'])('%s: a response with a length (no trailers possible) is relayed as before', async (path) => {
  const r = await exchange(path, 'te: trailers\r\n')
  expect(r.status).toBe('HTTP/1.1 200 OK')
  expect(r.head).toContain('content-length: 5')
  expect(r.raw.endsWith('\r\n\r\nhello')).toBe(true)
})

it('an HTTP/1.0 client (no chunked framing) gets the body without a Trailer header', async () => {
  const r = await exchange('/direct', 'te: trailers\r\n', '1.0')
  expect(r.status).toBe('HTTP/1.1 200 OK')
  expect(r.head.some((l) => l.startsWith('trailer:'))).toBe(false)
  expect(r.raw.endsWith('\r\n\r\nhello')).toBe(true)
})
