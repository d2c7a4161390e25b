// The database going away under a running control plane: writes and database reads answer 503
// with a clear message (no driver text), /readyz says not ready while /healthz stays up (liveness),
// and everything works again when the database returns, without a restart. PostgreSQL is real;
// it sits behind a TCP hop in this test so that "down" can be switched on and off (refused
// connections, then a server that accepts and never answers) without restarting it. SQLite's
// equivalent is another connection holding the write lock past the busy timeout.
import { DatabaseSync } from 'node:sqlite'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capturingLogger, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { Conformance } from './openapi-conformance.ts'

/** A TCP hop to the database that can refuse connections (down), swallow them (blackhole), or forward (up). */
class Hop {
  readonly #target: number
  #server: Server | undefined
  readonly #sockets = new Set<Socket>()
  mode: 'forward' | 'blackhole' = 'forward'
  port = 0

  constructor(target: number) {
    this.#target = target
  }

  async up(): Promise<void> {
    const server = createServer((client) => {
      this.#sockets.add(client)
      client.on('close', () => this.#sockets.delete(client))
      client.on('error', () => undefined)
      if (this.mode === 'blackhole') return
      const upstream = connect(this.#target, '127.0.0.1')
      this.#sockets.add(upstream)
      upstream.on('close', () => this.#sockets.delete(upstream))
      upstream.on('error', () => client.destroy())
      client.on('error', () => upstream.destroy())
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => resolve())
    })
    this.port = (server.address() as { port: number }).port
    this.#server = server
  }

  /** Refuse new connections and cut the open ones (the server is gone). */
  async down(): Promise<void> {
    const s = this.#server
    this.#server = undefined
    for (const sock of this.#sockets) sock.destroy()
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()))
  }
}

describe('PostgreSQL unreachable', () => {
  let pgServer: TestPostgres
  let hop: Hop
  let cp: TestControlPlane
  let oa: Conformance
  const logs = capturingLogger()
  beforeAll(async () => {
    pgServer = await startPostgres()
    const direct = await pgServer.createDatabase('igw_down')
    hop = new Hop(pgServer.port)
    await hop.up()
    cp = await startTestControlPlane({ db: direct.replace(`:${pgServer.port}/`, `:${hop.port}/`), logger: logs.logger })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  })
  afterAll(async () => {
    await hop?.down()
    await cp?.close()
    await pgServer?.close()
  })

  it('writes and database reads answer 503 while it is down, /readyz is 503 and /healthz 200; it all comes back by itself', async () => {
    expect((await cp.api('/v1/tenants/before', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
    expect(await oa.check(await cp.api('/readyz', { token: '' }), 'GET', '/readyz')).toMatchObject({ status: 'ready', database: 'postgres' })

    await hop.down()
    const put = await cp.api('/v1/tenants/while-down', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }), headers: { 'x-request-id': 'down-1' } })
    expect(put.status).toBe(503)
    expect(put.headers.get('retry-after')).toBe('5')
    const text = await put.clone().text()
    expect(text).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|connect|terminated/i)
    expect(await oa.check(put, 'PUT', '/v1/tenants/{id}')).toEqual({ type: 'about:blank', title: 'Service Unavailable', status: 503, detail: 'the database is unavailable; try again shortly (request id down-1)', requestId: 'down-1' })
    expect(logs.lines.find((l) => l.requestId === 'down-1')).toMatchObject({ msg: 'request failed: the database is unavailable', status: 503 })
    for (const [method, path, template, body] of [
      ['PUT', '/v1/config', '/v1/config', JSON.stringify(cp.store.head()!.document)],
      ['GET', '/v1/audit', '/v1/audit', undefined],
      ['GET', '/v1/proxies', '/v1/proxies', undefined],
      ['GET', '/v1/quotas', '/v1/quotas', undefined],
      ['POST', '/v1/config/rollback', '/v1/config/rollback', '{"version":1}'],
    ] as const) {
      const r = await cp.api(path, { method, ...(body === undefined ? {} : { body }) })
      expect(await oa.check(r, method, template), `${method} ${path}`).toMatchObject({ status: 503, detail: expect.stringMatching(/^the database is unavailable/) })
    }
    // The proxies' stream is refused with a status (they retry), not a 200 that breaks.
    const proxy = await cp.token({ sub: 'p', roles: ['proxy'] })
    expect(await oa.check(await cp.api('/v1/stream?proxy=down-p&version=1', { token: proxy }), 'GET', '/v1/stream')).toMatchObject({ status: 503 })
    expect(await oa.check(await cp.api('/v1/usage', { method: 'POST', token: proxy, body: JSON.stringify({ proxyId: 'down-p', bootId: 'b', seq: 1, at: new Date().toISOString(), tenants: {} }) }), 'POST', '/v1/usage')).toMatchObject({ status: 503 })

    const t0 = Date.now()
    const notReady = await cp.api('/readyz', { token: '' })
    expect(await oa.check(notReady, 'GET', '/readyz')).toMatchObject({ status: 503, detail: 'not ready: the postgres database does not answer' })
    expect(Date.now() - t0).toBeLessThan(2_500)
    expect(await oa.check(await cp.api('/healthz', { token: '' }), 'GET', '/healthz')).toMatchObject({ status: 'ok' })
    // The head in memory still answers reads of the document.
    expect((await cp.api('/v1/config')).status).toBe(200)

    await hop.up()
    const t1 = Date.now()
    let back = 0
    while (Date.now() - t1 < 10_000) {
      back = (await cp.api('/v1/tenants/after', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status
      if (back === 201) break
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(back).toBe(201)
    expect((await cp.api('/readyz', { token: '' })).status).toBe(200)
    expect((await cp.api('/v1/audit')).status).toBe(200)
  }, 30_000)

  it('a database that accepts connections and never answers: /readyz says so within 1.5 s', async () => {
    hop.mode = 'blackhole'
    await hop.down()
    await hop.up()
    try {
      const t0 = Date.now()
      const r = await cp.api('/readyz', { token: '' })
      expect(await oa.check(r, 'GET', '/readyz')).toMatchObject({ status: 503 })
      // Its 1.5 s timer answered, not the driver's 5 s connect timeout (which cannot come early);
      // a bound of 2 s left a loaded machine 0.5 s past the timer.
      expect(Date.now() - t0).toBeLessThan(3_500)
    } finally {
      hop.mode = 'forward'
      await hop.down()
      await hop.up()
    }
    // A pooled connection that was cut is replaced; the next request works.
    let status = 0
    const t1 = Date.now()
    while (Date.now() - t1 < 10_000 && status !== 200) {
      status = (await cp.api('/readyz', { token: '' })).status
      if (status !== 200) await new Promise((r) => setTimeout(r, 100))
    }
    expect(status).toBe(200)
  }, 30_000)
})

describe('SQLite locked by another connection', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('a write that cannot get the lock within the busy timeout is a 503, and works once the lock is gone', async () => {
    const other = new DatabaseSync(cp.dbSpec.slice('sqlite:'.length))
    other.exec('BEGIN IMMEDIATE')
    try {
      const r = await cp.api('/v1/tenants/locked', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
      expect(r.status).toBe(503)
      expect(await r.json()).toMatchObject({ status: 503, detail: expect.stringMatching(/^the database is unavailable/) })
    } finally {
      other.exec('ROLLBACK')
      other.close()
    }
    expect((await cp.api('/v1/tenants/locked', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
  }, 20_000)
})
