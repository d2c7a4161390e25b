// PostgreSQL restarted under two running control plane instances (the real server stopped with
// pg_ctl's fast shutdown and started again on the same data directory and port): requests that
// need the database are a clean 503 meanwhile, the pool reconnects by itself, LISTEN/NOTIFY between
// the instances resumes, and the version history and audit chain have no gap and no duplicate.
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { seedDocument, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

/** The running postmaster's command line for `port` (its binary, -D and the rest), read from /proc. */
function postmasterArgs(port: number): string[] {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let args: string[]
    try {
      args = readFileSync(join('/proc', pid, 'cmdline'), 'utf8').split('\0').filter(Boolean)
    } catch {
      continue
    }
    const i = args.indexOf('-p')
    if (i > 0 && args[i + 1] === String(port) && args.includes('-D') && /\/postgres$/.test(args[0]!)) return args
  }
  throw new Error(`no postgres process on port ${port}`)
}

const asServerUser = (cmd: string, args: string[]): [string, string[]] => (process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args])

let pg: TestPostgres
let server: string[] // postgres binary and its arguments
let a: TestControlPlane
let b: ControlPlane
let restarted = false

function pgCtl(args: string[]): void {
  const bin = join(server[0]!, '..', 'pg_ctl')
  const [cmd, full] = asServerUser(bin, args)
  const r = spawnSync(cmd, full, { encoding: 'utf8', timeout: 30_000 })
  if (r.status !== 0) throw new Error(`pg_ctl ${args[0]} failed: ${r.stdout}${r.stderr}`)
}
const dataDir = () => server[server.indexOf('-D') + 1]!
function stopPostgres(): void {
  pgCtl(['stop', '-D', dataDir(), '-m', 'fast', '-w', '-t', '20'])
}
function startAgain(): void {
  // The same options as the helper's server (port, socket directory, fsync off…), detached from us.
  const opts = server.slice(1).filter((_, i, all) => all[i] !== '-D' && all[i - 1] !== '-D')
  pgCtl(['start', '-D', dataDir(), '-w', '-t', '30', '-l', join(dataDir(), '..', 'restarted.log'), '-o', opts.map((o) => `'${o}'`).join(' ')])
  restarted = true
}

beforeAll(async () => {
  pg = await startPostgres()
  server = postmasterArgs(pg.port)
  const db = await pg.createDatabase('igw_restart16')
  a = await startTestControlPlane({ db, seed: seedDocument() })
  // B learns of A's commits by NOTIFY only (its head poll is 10 minutes away).
  b = await startControlPlane({
    db,
    host: '127.0.0.1',
    port: 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: loadOrCreateSigningKey(a.keyPath),
    logger: pino({ level: 'silent' }),
    headPollMs: 600_000,
  })
}, 60_000)
afterAll(async () => {
  await b?.close()
  await a?.close()
  // A server we started again is not the helper's child: stop it ourselves before the helper removes its directory.
  if (restarted) {
    try {
      stopPostgres()
    } catch {
      // already stopped
    }
  }
  await pg?.close()
})

async function put(tenant: string): Promise<Response> {
  return a.api(`/v1/tenants/${tenant}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
}

describe('PostgreSQL restarted under running control planes', () => {
  it('503 while it is down, then writes, NOTIFY and the chain carry on with no gap and no duplicate', async () => {
    expect((await put('before')).status).toBe(201)
    const v1 = a.store.head()!.version
    await expect.poll(() => b.store.head()?.version, { timeout: 10_000 }).toBe(v1)

    stopPostgres()
    const down = await put('while-down')
    expect(down.status).toBe(503)
    expect(down.headers.get('retry-after')).toBe('5')
    expect(((await down.json()) as { detail: string }).detail).toMatch(/^the database is unavailable; try again shortly/)
    expect((await a.api('/v1/audit')).status).toBe(503)
    expect((await a.api('/v1/config')).status).toBe(200) // the head in memory
    expect((await a.api('/readyz', { token: '' })).status).toBe(503)

    startAgain()
    // The first requests after the restart may meet pooled connections the server closed; within
    // a few seconds writes work again without a restart of the control plane.
    let status = 0
    for (let i = 0; i < 100 && status !== 201; i++) {
      status = (await put('after')).status
      if (status !== 201) {
        expect(status).toBe(503)
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    expect(status).toBe(201)
    const v2 = a.store.head()!.version
    expect(v2).toBe(v1 + 1)
    // B hears of it: its LISTEN connection came back (or it re-read the head when it did).
    await expect.poll(() => b.store.head()?.version, { timeout: 20_000, interval: 100 }).toBe(v2)
    // And the next commit, through B this time, reaches A by NOTIFY too (A's poll is 5 s; B's LISTEN reconnect re-reads).
    const viaB = await fetch(`${b.url}/v1/tenants/after-b`, { method: 'PUT', headers: { authorization: `Bearer ${await a.token({ sub: 'b-admin', roles: ['admin'] })}`, 'content-type': 'application/json' }, body: JSON.stringify({ tier: 'silver' }) })
    expect(viaB.status).toBe(201)
    await expect.poll(() => a.store.head()?.version, { timeout: 20_000, interval: 100 }).toBe(v2 + 1)

    // Versions 1..head, each once; one audit entry per version plus nothing else; the chain intact.
    const { items } = (await (await a.api('/v1/config/versions?limit=1000')).json()) as { items: { version: number }[] }
    expect(items.map((i) => i.version).sort((x, y) => x - y)).toEqual(Array.from({ length: v2 + 1 }, (_, i) => i + 1))
    expect(await (await a.api('/v1/audit/verify')).json()).toMatchObject({ ok: true, entries: v2 + 1, problems: [] })
  }, 120_000)
})
