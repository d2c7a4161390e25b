// PostgreSQL reached over its unix socket (`postgresql:///igw?host=/var/run/postgresql`, a cloud
// SQL proxy's socket directory). When the server stops or restarts it removes the socket file, and
// connecting fails with ENOENT, not ECONNREFUSED: every admin request was then a 500 "internal
// error" (a bug, not to retry) instead of a 503 with Retry-After, and a start while the server was
// down said "igw control-plane: connect ENOENT …" without naming --db. Real PostgreSQL.
import { existsSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { runControlPlane } from '../../control-plane/cli.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

let server: TestPostgres | undefined
let cp: TestControlPlane | undefined
let socketDir: string

beforeAll(async () => {
  server = await startPostgres()
  await server.createDatabase('sock23s')
  // The helper puts the server's socket in its own temporary directory.
  const dir = readdirSync(tmpdir())
    .filter((n) => n.startsWith('igw-pg-'))
    .map((n) => join(tmpdir(), n))
    .find((d) => existsSync(join(d, `.s.PGSQL.${server!.port}`)))
  if (dir === undefined) throw new Error('the test PostgreSQL has no unix socket')
  socketDir = dir
}, 30_000)
afterAll(async () => {
  await cp?.close()
  await server?.close()
})

it('a server gone from its unix socket is a 503 to retry, not a 500', async () => {
  cp = await startTestControlPlane({ db: `postgresql:///sock23s?host=${encodeURIComponent(socketDir)}&port=${server!.port}&user=postgres` })
  expect((await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
  await server!.close() // the socket file goes with the server
  server = undefined
  const r = await cp.api('/v1/tenants/hooli', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
  expect(r.status, await r.clone().text()).toBe(503)
  expect(r.headers.get('retry-after')).not.toBeNull()
}, 30_000)

it('igw control-plane started while the socket is absent names --db', async () => {
  const err = await runControlPlane({ db: `postgresql://igw:pw-23s@/igw?host=${encodeURIComponent(join(tmpdir(), 'igw-no-such-socket-dir-23s'))}`, 'auth-secret': 'x'.repeat(40), listen: '127.0.0.1:0', 'metrics-listen': 'off', 'log-level': 'silent' }).then(
    async (started) => {
      await started.close()
      return undefined
    },
    (e: unknown) => e as Error,
  )
  expect(err).toBeInstanceOf(ConfigError)
  expect(err!.message).toMatch(/^--db/)
  expect((err as ConfigError).problems.join('\n')).toMatch(/cannot open postgresql:\/\/\[redacted\]@\/igw.*ENOENT/)
  expect((err as ConfigError).problems.join('\n')).not.toContain('pw-23s')
})
