// Two control plane instances on one real PostgreSQL, the way the Kubernetes PostgreSQL overlay
// runs them:
// - the LISTEN connection that carries other instances' commits is opened again when it is lost
//   (a PostgreSQL restart, a failover, a network cut): it used to be gone for good, and each
//   replica then learnt of the other's commits only from its 5 s head poll;
// - GET /v1/proxies answers the same on both: a proxy whose stream the other instance holds is
//   connected (it used to be shown disconnected by every instance but the one holding it).
// B reaches PostgreSQL through a TCP hop that can cut its connections, as a restart does.
import { mkdtempSync } from 'node:fs'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { seedDocument, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

/** A TCP hop to the database whose connections can be cut (the server went away and came back). */
class Hop {
  readonly #target: number
  #server: Server | undefined
  readonly #sockets = new Set<Socket>()
  port = 0

  constructor(target: number) {
    this.#target = target
  }

  async up(): Promise<void> {
    const server = createServer((client) => {
      this.#sockets.add(client)
      client.on('close', () => this.#sockets.delete(client))
      client.on('error', () => undefined)
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

  async down(): Promise<void> {
    const s = this.#server
    this.#server = undefined
    for (const sock of this.#sockets) sock.destroy()
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()))
  }
}

let pg: TestPostgres
let hop: Hop
let a: TestControlPlane
let b: ControlPlane
beforeAll(async () => {
  pg = await startPostgres()
  const db = await pg.createDatabase('igw_replicas_sweep14')
  hop = new Hop(pg.port)
  await hop.up()
  const dir = mkdtempSync(join(tmpdir(), 'igw-replicas14-')) // one signing key for both
  a = await startTestControlPlane({ db, dir, seed: seedDocument() })
  // B polls the head only every 10 minutes: what it learns in this test, it learns by NOTIFY.
  b = await startControlPlane({
    db: db.replace(`:${pg.port}/`, `:${hop.port}/`),
    host: '127.0.0.1',
    port: 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')),
    logger: pino({ level: 'silent' }),
    headPollMs: 600_000,
  })
}, 60_000)
afterAll(async () => {
  await b?.close()
  await a?.close()
  await hop?.down()
  await pg?.close()
})

async function put(tenant: string): Promise<number> {
  const r = await a.api(`/v1/tenants/${tenant}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
  expect(r.status).toBe(201)
  return ((await r.json()) as { version: number }).version
}

describe('NOTIFY after the database connection was lost', () => {
  it('B hears A’s commits again once its connections are back, and catches up on one made while they were down', async () => {
    const v1 = await put('before-cut')
    await expect.poll(() => b.store.head()?.version, { timeout: 10_000 }).toBe(v1)

    await hop.down()
    // Committed through A while B cannot hear: its NOTIFY reaches nobody on B's side.
    const during = await put('during-cut')
    await hop.up()
    // B re-reads the head once it listens again.
    await expect.poll(() => b.store.head()?.version, { timeout: 20_000, interval: 100 }).toBe(during)

    // And later commits arrive by NOTIFY again (B's poll is 10 minutes away).
    const after = await put('after-cut')
    await expect.poll(() => b.store.head()?.version, { timeout: 20_000, interval: 100 }).toBe(after)
  }, 60_000)
})

describe('GET /v1/proxies across replicas', () => {
  const row = async (cp: { url: string }, id: string) => {
    const token = await a.token({ roles: ['viewer'] })
    const r = await fetch(`${cp.url}/v1/proxies`, { headers: { authorization: `Bearer ${token}` } })
    expect(r.status).toBe(200)
    return ((await r.json()) as { items: { id: string; connected: boolean }[] }).items.find((p) => p.id === id)
  }

  it('a proxy streaming from B is connected on A as on B, and disconnected on both once it leaves', async () => {
    const token = await a.token({ sub: 'p', roles: ['proxy'] })
    const ac = new AbortController()
    const res = await fetch(`${b.url}/v1/stream?proxy=on-b&version=1`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal })
    expect(res.status).toBe(200)
    try {
      expect((await row(b, 'on-b'))?.connected).toBe(true)
      expect((await row(a, 'on-b'))?.connected).toBe(true)
    } finally {
      ac.abort()
    }
    await expect.poll(async () => (await row(b, 'on-b'))?.connected, { timeout: 10_000 }).toBe(false)
    await expect.poll(async () => (await row(a, 'on-b'))?.connected, { timeout: 10_000 }).toBe(false)
  })

  it('a row left connected by an instance that died (not refreshed for a minute) is not shown connected', async () => {
    const old = Date.now() - 60_000
    await a.db.query('INSERT INTO proxies (id, hostname, boot_id, first_seen, last_seen, connected) VALUES ($1, NULL, NULL, $2, $2, 1)', ['orphan', old])
    expect((await row(a, 'orphan'))?.connected).toBe(false)
    expect((await row(b, 'orphan'))?.connected).toBe(false)
  })
})
