// The PostgreSQL LISTEN connection and a start that fails (sweep 24f), on a real PostgreSQL:
// - the LISTEN connection had no TCP keepalive: a server or path that vanished without a FIN/RST
//   (a host crash, a NAT dropping the idle flow) left it "open" for ever, never re-opened, and
//   other instances' commits went unheard. Now every connection of the control plane has
//   keepalive on (seen in the kernel's socket table: the keepalive timer runs on the idle socket);
// - a LISTEN connection the server ends (pg_terminate_backend: an admin, a pooler, a failover) is
//   opened again, and commits made meanwhile are caught up with;
// - a start that failed after the store opened (LISTEN refused, the --listen port taken) left the
//   database pool — and the LISTEN connection — open: the process did not exit, a retried start
//   piled up connections. Now it closes them.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { seedDocument, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres
let su: pg.Client
const dir = mkdtempSync(join(tmpdir(), 'igw-listen24f-'))
beforeAll(async () => {
  server = await startPostgres()
  su = new pg.Client({ connectionString: server.url })
  await su.connect()
}, 30_000)
afterAll(async () => {
  await su?.end()
  await server?.close()
  rmSync(dir, { recursive: true, force: true })
})

/** A database owned by a role of its own (its connections are told apart by role), at most `limit` connections for that role. */
async function ownDatabase(name: string, limit = -1): Promise<string> {
  await su.query(`CREATE ROLE ${name} LOGIN CONNECTION LIMIT ${limit}`)
  await su.query(`CREATE DATABASE ${name} OWNER ${name}`)
  return `postgres://${name}@127.0.0.1:${server.port}/${name}`
}

const connectionsOf = async (role: string) => Number((await su.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1', [role])).rows[0]!.n)

function start(db: string, port = 0): Promise<ControlPlane> {
  return startControlPlane({ db, host: '127.0.0.1', port, auth: { secret: TEST_AUTH_SECRET }, signingKey: loadOrCreateSigningKey(join(dir, 'key.pem')), seed: seedDocument(), logger: pino({ level: 'silent' }), headPollMs: 600_000 })
}

describe('the LISTEN connection', () => {
  let a: TestControlPlane
  let b: ControlPlane
  const role = 'igw_listen24f'
  beforeAll(async () => {
    const db = await ownDatabase(role)
    a = await startTestControlPlane({ db, dir })
    // B learns of A's commits only by NOTIFY (its head poll is 10 minutes away).
    b = await start(db)
  }, 30_000)
  afterAll(async () => {
    await b?.close()
    await a?.close()
  })

  /** B's LISTEN backend: its pid and its client's port. */
  const listener = async () =>
    (await su.query<{ pid: number; client_port: number }>("SELECT pid, client_port FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'LISTEN %' ORDER BY backend_start DESC", [role])).rows

  const put = async (tenant: string): Promise<number> => {
    const r = await a.api(`/v1/tenants/${tenant}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
    expect(r.status).toBe(201)
    return ((await r.json()) as { version: number }).version
  }

  it('has TCP keepalive on: the kernel runs the keepalive timer on the idle socket', async () => {
    await expect.poll(async () => (await listener()).length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2)
    const ports = new Set((await listener()).map((l) => l.client_port))
    // /proc/net/tcp: local and remote address as hex ip:port, `tr` (timer kind) 2 = keepalive.
    const timers = () =>
      readFileSync('/proc/net/tcp', 'utf8')
        .split('\n')
        .slice(1)
        .map((line) => line.trim().split(/\s+/))
        .filter((f) => f.length > 5 && ports.has(parseInt(f[1]!.split(':')[1]!, 16)) && parseInt(f[2]!.split(':')[1]!, 16) === server.port)
        .map((f) => f[5]!.split(':')[0])
    await expect.poll(timers, { timeout: 3_000 }).toEqual([...ports].map(() => '02'))
  })

  it('ended by the server (pg_terminate_backend), it is opened again and B catches up', async () => {
    const v1 = await put('listen-before')
    await expect.poll(() => b.store.head()?.version, { timeout: 5_000 }).toBe(v1)
    // Both instances' LISTEN backends go; the commit between is announced to nobody.
    await su.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'LISTEN %'", [role])
    const during = await put('listen-during')
    await expect.poll(() => b.store.head()?.version, { timeout: 10_000, interval: 50 }).toBe(during)
    await expect.poll(async () => (await listener()).length, { timeout: 10_000, interval: 50 }).toBe(2)
    const after = await put('listen-after')
    await expect.poll(() => b.store.head()?.version, { timeout: 10_000, interval: 50 }).toBe(after)
  })
})

describe('a start that fails after the database opened', () => {
  it('LISTEN refused (the role has no connection left): the start fails and leaves no connection open', async () => {
    const role = 'igw_one24f'
    const db = await ownDatabase(role, 1)
    await expect(start(db)).rejects.toThrow(/too many connections/)
    await expect.poll(() => connectionsOf(role), { timeout: 3_000, interval: 50 }).toBe(0)
  })

  it('the --listen port taken: the start fails and leaves no connection (the LISTEN one included) open', async () => {
    const role = 'igw_taken24f'
    const db = await ownDatabase(role)
    const taken: Server = createServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    try {
      await expect(start(db, (taken.address() as { port: number }).port)).rejects.toThrow(/EADDRINUSE/)
      await expect.poll(() => connectionsOf(role), { timeout: 3_000, interval: 50 }).toBe(0)
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()))
    }
  })
})
