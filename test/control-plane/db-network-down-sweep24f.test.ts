// A PostgreSQL connection that fails with ENETDOWN, EHOSTDOWN, ENETRESET or EADDRNOTAVAIL (an
// interface down or without its address, a pod network re-plumbed, ephemeral ports used up) was
// not read as "the database is unavailable": a write answered 500 "internal error" instead of the
// 503 with Retry-After that ECONNREFUSED gets (sweep 24f). PostgreSQL and the control plane are
// real; the kernel's answer to connect() cannot be produced on loopback, so new sockets to the
// database's port fail with Node's own error shape for it (errno exception, syscall "connect").
import net from 'node:net'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { capturingLogger, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

const ERRNO: Record<string, number> = { ENETDOWN: -100, EHOSTDOWN: -112, ENETRESET: -102, EADDRNOTAVAIL: -99 }

describe('PostgreSQL network errors (sweep 24f)', () => {
  let server: TestPostgres
  let url: string
  let cp: TestControlPlane
  const logs = capturingLogger()
  beforeAll(async () => {
    server = await startPostgres()
    url = await server.createDatabase('igw_netdown')
    cp = await startTestControlPlane({ db: url, logger: logs.logger })
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })
  afterAll(async () => {
    vi.restoreAllMocks()
    await cp?.close()
    await server?.close()
  })

  /** From now on, connecting to the database fails with `code`, as the kernel reports it. */
  function failConnects(code: string): void {
    const connect = net.Socket.prototype.connect
    vi.spyOn(net.Socket.prototype, 'connect').mockImplementation(function (this: net.Socket, ...args: unknown[]) {
      const port = typeof args[0] === 'object' && args[0] !== null ? (args[0] as { port?: unknown }).port : args[0]
      if (Number(port) !== server.port) return (connect as (...a: unknown[]) => net.Socket).apply(this, args)
      const err = Object.assign(new Error(`connect ${code} 127.0.0.1:${server.port}`), { errno: ERRNO[code], code, syscall: 'connect', address: '127.0.0.1', port: server.port })
      process.nextTick(() => this.destroy(err))
      return this
    })
  }

  it.each(Object.keys(ERRNO))('%s while connecting: a write answers 503 "the database is unavailable" with Retry-After', async (code) => {
    // The control plane's open connections end (as they would with the network), so the next
    // statement needs a new one.
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    failConnects(code)
    try {
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')
    } finally {
      await admin.end()
    }
    // A pooled connection not yet known to be closed fails as "Connection terminated" (already a
    // 503); the request whose new connection met `code` is the one that matters.
    let n = 0
    const seen = await vi.waitUntil(
      async () => {
        const id = `netdown-${code}-${n++}`
        const res = await cp.api('/v1/tenants/netdown', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }), headers: { 'x-request-id': id } })
        const line = logs.lines.find((l) => l.requestId === id && JSON.stringify(l).includes(code))
        return line === undefined ? (await res.body?.cancel(), false) : { res, line }
      },
      { timeout: 8_000, interval: 20 },
    )
    expect(seen.res.status).toBe(503)
    expect(seen.res.headers.get('retry-after')).toBe('5')
    expect(((await seen.res.json()) as { detail: string }).detail).toMatch(/database is unavailable/)
    expect(seen.line.msg).toBe('request failed: the database is unavailable')
  })
})
