// A store that runs out of disk space under a config commit: a real, tiny tmpfs holds the SQLite
// file (and, for PostgreSQL, a tablespace holding the database), filled up before a write. The
// commit answers 503 with code STORAGE_FULL and Retry-After (it answered a generic 500, as for a
// bug), is logged and counted, keeps nothing of the change (no version, no audit entry, the chain
// intact), and the same write succeeds once space is freed — without a restart.
// Mounting a tmpfs needs root (CAP_SYS_ADMIN): where that is refused the test is skipped.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capturingLogger, metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { canMountTmpfs, fillUntilFull, releaseMounts, tinyMount } from '../helpers/tmpfs.ts'
import { Conformance } from './openapi-conformance.ts'

const dirs: string[] = []

afterAll(() => {
  releaseMounts()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

/** A persisted document big enough (and incompressible) to need new pages in any store. */
const bigDocument = () => ({ document: `# ${randomBytes(300 * 1024).toString('base64')}\n{ hello }` })

async function exercise(cp: TestControlPlane, filler: string, lines: Record<string, unknown>[]): Promise<void> {
  const oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  expect((await cp.api('/v1/persisted-documents/warm', { method: 'PUT', body: JSON.stringify({ document: '{ hello }' }) })).status).toBe(201)
  const before = cp.store.head()!.version
  const auditBefore = (await cp.db.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM audit_log'))[0]!.n

  fillUntilFull(filler)
  const r = await cp.api('/v1/persisted-documents/big', { method: 'PUT', body: JSON.stringify(bigDocument()) })
  const body = (await oa.check(r, 'PUT', '/v1/persisted-documents/{id}')) as Record<string, unknown>
  expect(r.status, JSON.stringify(body)).toBe(503)
  expect(r.headers.get('retry-after')).toBe('30')
  expect(body).toMatchObject({ status: 503, code: 'STORAGE_FULL', detail: expect.stringMatching(/^the database is out of disk space; nothing was changed/) })
  expect(body.requestId).toBe(r.headers.get('x-request-id'))
  // Logged with the driver's words, counted.
  expect(lines.some((l) => l.msg === 'request failed: the database is out of disk space (nothing of the change was kept)' && l.requestId === body.requestId)).toBe(true)
  const metrics = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
  expect(metricSample(metrics, 'igw_control_plane_storage_full_total')).toBe(1)
  expect(metricSample(metrics, 'igw_control_plane_requests_total', { route: '/v1/persisted-documents/{id}', method: 'PUT', status: '503' })).toBe(1)

  // Nothing half-written: no version, no audit entry, the head in memory unchanged.
  expect(cp.store.head()!.version).toBe(before)
  expect((await cp.store.versions(1))[0]!.version).toBe(before)
  expect((await cp.db.query<{ n: unknown }>('SELECT COUNT(*) AS n FROM audit_log'))[0]!.n).toEqual(auditBefore)
  expect((await cp.api('/v1/persisted-documents/big')).status).toBe(404)

  // Space freed: the same write goes through, next in line, and the chain is intact.
  unlinkSync(filler)
  const again = await cp.api('/v1/persisted-documents/big', { method: 'PUT', body: JSON.stringify(bigDocument()) })
  expect(again.status).toBe(201)
  expect(cp.store.head()!.version).toBe(before + 1)
  const verify = (await (await cp.api('/v1/audit/verify')).json()) as { ok: boolean; problems: unknown[] }
  expect(verify.problems).toEqual([])
  expect(verify.ok).toBe(true)
}

describe.skipIf(!canMountTmpfs)('a config commit on a full disk', () => {
  it('SQLite (SQLITE_FULL): 503 STORAGE_FULL with Retry-After, logged, counted, nothing kept; fine once space is freed', async () => {
    const mount = tinyMount('6m')!
    const keys = mkdtempSync(join(tmpdir(), 'igw-full17-keys-'))
    dirs.push(keys)
    const { logger, lines } = capturingLogger()
    const cp = await startTestControlPlane({ dir: keys, db: `sqlite:${join(mount, 'igw.db')}`, logger })
    try {
      await exercise(cp, join(mount, 'filler'), lines)
    } finally {
      await cp.close()
    }
  }, 60_000)

  describe('PostgreSQL', () => {
    let server: TestPostgres
    beforeAll(async () => {
      server = await startPostgres()
    }, 60_000)
    afterAll(async () => {
      await server?.close()
    })

    it('PostgreSQL (53100 could not extend file): 503 STORAGE_FULL with Retry-After, logged, counted, nothing kept; fine once space is freed', async () => {
      // A tablespace on the tiny mount, owned by the server's user; the database lives in it.
      const mount = tinyMount('8m')!
      const owner = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
      if (owner.status === 0) chownSync(mount, Number(owner.stdout.trim()), Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim()))
      const admin = new pg.Client({ connectionString: server.url })
      await admin.connect()
      try {
        await admin.query(`CREATE TABLESPACE tiny LOCATION '${mount}'`)
        await admin.query('CREATE DATABASE igw_full17 TABLESPACE tiny')
      } finally {
        await admin.end()
      }
      const keys = mkdtempSync(join(tmpdir(), 'igw-full17-keys-'))
      dirs.push(keys)
      const { logger, lines } = capturingLogger()
      const cp = await startTestControlPlane({ dir: keys, db: server.url.replace(/\/postgres$/, '/igw_full17'), logger })
      try {
        await exercise(cp, join(mount, 'filler'), lines)
      } finally {
        await cp.close()
      }
    }, 90_000)
  })
})
