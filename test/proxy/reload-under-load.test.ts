// Config changes under load, against a real igw (worker threads, file watch) and real slow
// backends: requests that started under one snapshot finish under it, whatever reloads follow.
import { readFileSync, writeFileSync } from 'node:fs'
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parse as parseYaml, stringify } from 'yaml'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, writeTempConfig } from '../helpers/proxy.ts'
import { validateConfig } from '../../config/load.ts'
import { sleep, waitUntil } from '../helpers/wait.ts'

/** A backend that answers every request after `delayMs`, naming itself; counts open sockets. */
async function slowBackend(name: string, delayMs: number): Promise<RawBackend & { open: () => number }> {
  let open = 0
  const b = await startRawBackend((req, res) => {
    req.resume()
    req.on('end', () =>
      setTimeout(() => {
        const body = JSON.stringify({ data: { backend: name } })
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        res.end(body)
      }, delayMs),
    )
  })
  b.server.on('connection', (s) => {
    open++
    s.on('close', () => open--)
  })
  return Object.assign(b, { open: () => open })
}

/** A raw HTTP/1.1 POST whose body is sent in two parts; resolves with the status line and body. */
function splitPost(port: number, path: string, body: string): { sendRest: () => void; done: Promise<{ status: number; body: string }> } {
  const sock = connect(port, '127.0.0.1')
  const cut = Math.floor(body.length / 2)
  sock.write(`POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body.slice(0, cut)}`)
  let raw = ''
  sock.setEncoding('utf8')
  sock.on('data', (d: string) => (raw += d))
  const done = new Promise<{ status: number; body: string }>((resolve, reject) => {
    sock.on('error', reject)
    sock.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(raw)?.[1] ?? 0), body: raw.slice(raw.indexOf('\r\n\r\n') + 4) }))
  })
  return { sendRest: () => sock.write(body.slice(cut)), done }
}

const QUERY = JSON.stringify({ query: '{ backend }' })

describe('requests in flight across reloads of their own route', () => {
  let a: Awaited<ReturnType<typeof slowBackend>>
  let b: Awaited<ReturnType<typeof slowBackend>>
  let c: Awaited<ReturnType<typeof slowBackend>>
  beforeAll(async () => {
    ;[a, b, c] = await Promise.all([slowBackend('a', 50), slowBackend('b', 50), slowBackend('c', 50)])
  })
  afterAll(async () => {
    await Promise.all([a?.close(), b?.close(), c?.close()])
  })

  it('a request still reading its body under version 1 reaches version 1\'s upstream after two more reloads (its pool is not closed under it)', async () => {
    const doc = (url: string) => ({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, routes: [{ name: 'gql', upstream: url }] })
    const path = writeTempConfig(doc(a.url))
    const load = () => validateConfig(parseYaml(readFileSync(path, 'utf8')))
    const proxy = await startTestProxy(doc(a.url), { watchPath: path, loadConfig: load })
    try {
      const slow = splitPost(proxy.port, '/graphql', QUERY)
      await sleep(100) // the exchange is reading the body under version 1 (upstream a)
      writeFileSync(path, stringify(doc(b.url)))
      await waitUntil(() => proxy.version() === 2, 5_000, 'version 2')
      writeFileSync(path, stringify(doc(c.url)))
      await waitUntil(() => proxy.version() === 3, 5_000, 'version 3')
      await sleep(100) // version 2 had no requests: it retired at once
      slow.sendRest()
      const got = await slow.done
      expect(got.status).toBe(200)
      expect(JSON.parse(got.body)).toEqual({ data: { backend: 'a' } })
    } finally {
      await proxy.close()
    }
  })
})

describe('reloads that overlap (a file reload or SIGHUP while the control plane pushes)', () => {
  let bk: RawBackend
  beforeAll(async () => {
    bk = await slowBackend('x', 1)
  })
  afterAll(async () => {
    await bk?.close()
  })
  const base = { mode: 'ingress' as const, listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1 }
  const route = (name: string, filters: { name: 'request-id' | 'quota' }[] = []) => ({ name, match: { pathPrefix: `/${name}` }, upstream: bk.url, type: 'http' as const, filters })
  // Ten routes whose chains take longer to build (quota's create is async) than one bare route.
  const heavy = () => ({ ...base, routes: Array.from({ length: 10 }, (_, i) => route(`heavy${i}`, [{ name: 'request-id' }, { name: 'quota' }])) })
  const light = () => ({ ...base, routes: [route('light')] })
  const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, sleep(ms).then(() => 'no answer' as const)])
  const status = async (url: string) => (await fetch(url, { signal: AbortSignal.timeout(2_000) })).status

  it('a file reload and a push at the same moment both answer, in call order, and the later one is in force', async () => {
    const path = writeTempConfig(heavy())
    const proxy = await startTestProxy(light(), { loadConfig: () => validateConfig(parseYaml(readFileSync(path, 'utf8'))) })
    try {
      const fromFile = proxy.reload() // SIGHUP
      const pushed = proxy.applyConfig(validateConfig(light()))
      expect(await within(fromFile, 3_000)).toEqual({ ok: true, version: 2 })
      expect(await within(pushed, 3_000)).toEqual({ ok: true, version: 3 })
      expect(proxy.version()).toBe(3)
      expect(await status(`${proxy.url}/light`)).toBe(200)
      expect(await status(`${proxy.url}/heavy0`)).toBe(404)
      // and reloads are not wedged behind it
      expect(await within(proxy.reload(), 3_000)).toEqual({ ok: true, version: 4 })
    } finally {
      await proxy.close()
    }
  })

  it('a worker restarted during a slow apply ends on the newest version, not on the one it was synced to', async () => {
    // A Redis that accepts and never answers: the quota filter's warm-up waits its 1 s for it,
    // so building this version takes that long (as with a slow Redis in production).
    const silent = createNetServer((s) => s.on('error', () => undefined))
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    const slow = { ...base, workers: 2, redis: { url: `redis://127.0.0.1:${(silent.address() as AddressInfo).port}` }, routes: [route('slow', [{ name: 'quota' }])] }
    const proxy = await startTestProxy({ ...light(), workers: 2 })
    try {
      const v2 = proxy.applyConfig(validateConfig(slow))
      await proxy.threads()[0]!.terminate() // restarted while version 2 is being applied
      const v3 = proxy.applyConfig(validateConfig({ ...light(), workers: 2 }))
      expect(await within(v2, 5_000)).toMatchObject({ ok: true, version: 2 })
      expect(await within(v3, 5_000)).toMatchObject({ ok: true, version: 3 })
      await waitUntil(() => proxy.threads().every((t) => t !== undefined), 5_000, 'both threads')
      await sleep(1_500) // any build still running on a thread has finished
      for (let i = 0; i < 30; i++) {
        const res = await fetch(`${proxy.url}/light`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(2_000) })
        await res.arrayBuffer()
        expect(res.status).toBe(200)
      }
    } finally {
      await proxy.close()
      silent.close()
    }
  }, 20_000)
})
