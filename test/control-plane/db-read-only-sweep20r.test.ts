// A PostgreSQL that takes reads but refuses writes — a standby, or a primary being demoted while a
// failover runs (SQLSTATE 25006, read_only_sql_transaction) — is a transient state of the
// database, not a bug of the control plane: writes and new config streams are 503 with
// Retry-After (they were 500 "internal error"), and once the database takes writes again the
// control plane does too, without a restart (the connections that met the refusal are dropped).
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres
let cp: TestControlPlane

/** Runs `sql` as the server's superuser, then ends every other session of the database (new sessions take its settings). */
async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: server.url })
  await c.connect()
  try {
    await c.query(sql)
    await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'ro20r' AND pid <> pg_backend_pid()")
  } finally {
    await c.end()
  }
}

beforeAll(async () => {
  server = await startPostgres()
  cp = await startTestControlPlane({ db: await server.createDatabase('ro20r') })
}, 30_000)
afterAll(async () => {
  await cp?.close()
  await server?.close()
})

it('writes to a read-only PostgreSQL are 503 with Retry-After, and work again once it takes writes', async () => {
  await admin('ALTER DATABASE ro20r SET default_transaction_read_only = on')
  const put = (name: string) => cp.api(`/v1/tenants/${name}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
  // The first statements after the sessions were ended may meet a lost connection (also a 503).
  const refused = await put('initech')
  expect(refused.status).toBe(503)
  expect(refused.headers.get('retry-after')).toBe('5')
  expect(((await refused.json()) as { detail: string }).detail).toMatch(/database is unavailable/)
  expect((await put('initech')).status).toBe(503)
  // A proxy's stream writes its row before the first byte: refused the same way, so it retries.
  const proxyToken = await cp.token({ sub: 'p1', roles: ['proxy'] })
  const stream = await fetch(`${cp.url}/v1/stream?proxy=p1&version=0`, { headers: { authorization: `Bearer ${proxyToken}` } })
  expect(stream.status).toBe(503)
  expect(stream.headers.get('retry-after')).toBe('5')
  await stream.body?.cancel()
  // Reads still work meanwhile.
  expect((await cp.api('/v1/config')).status).toBe(200)

  await admin('ALTER DATABASE ro20r SET default_transaction_read_only = off')
  await expect.poll(async () => (await put('initech')).status, { timeout: 5_000 }).toBe(201)
  expect(((await (await cp.api('/v1/config')).json()) as { document: { tenants: Record<string, unknown> } }).document.tenants.initech).toEqual({ tier: 'gold' })
})
