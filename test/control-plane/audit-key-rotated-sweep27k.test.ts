// After a signing-key change the control plane wrote an audit entry with the new key only through
// `config.resign` (--previous-keys given and a head the old key signed): otherwise nothing the new
// key signed entered the chain until the next change, and whoever held the old key could re-sign
// the whole tail from inside the old key's period. Now every start whose newest audit entry is not
// this key's appends `audit.key_rotated`, signed by this key — once, across restarts and replicas.
// Real parts: control planes on one SQLite file, the real migrations, the real `igw audit verify`.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterAll, expect, it } from 'vitest'
import { appendAudit, verifyAudit } from '../../control-plane/audit.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { generateSigningKey, verifySignature, type SigningKey } from '../../control-plane/signing.ts'
import { seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-keyrot27k-'))
const running = new Set<ControlPlane>()
afterAll(async () => {
  for (const cp of running) await cp.close()
  rmSync(dir, { recursive: true, force: true })
})

const keyA = generateSigningKey()
const keyB = generateSigningKey()

async function start(db: string, key: SigningKey, previous: SigningKey[] = []): Promise<ControlPlane> {
  const cp = await startControlPlane({
    db: `sqlite:${join(dir, db)}`,
    host: '127.0.0.1',
    port: 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: key,
    seed: seedDocument(),
    logger: pino({ level: 'silent' }),
    ...(previous.length > 0 ? { previousKeys: previous.map((k) => k.publicKey) } : {}),
  })
  running.add(cp)
  return cp
}
async function stop(cp: ControlPlane): Promise<void> {
  running.delete(cp)
  await cp.close()
}

interface Row {
  seq: number
  action: string
  key_id: string
  hash: string
  signature: string
  before_json: string
  after_json: string
}
const rotations = async (cp: ControlPlane) => cp.db.query<Row>("SELECT * FROM audit_log WHERE action = 'audit.key_rotated' ORDER BY seq")

async function writeTenant(cp: ControlPlane, name: string): Promise<void> {
  await cp.store.commit({
    actor: 'alice',
    action: 'tenants.put',
    resource: `tenants/${name}`,
    change: (head) => ({ document: { ...head.document, tenants: { ...(head.document.tenants as object), [name]: { tier: 'gold' } } }, before: undefined, after: { tier: 'gold' }, result: undefined }),
  })
}

function cliVerify(db: string, key: SigningKey, previous: SigningKey[]) {
  const file = (k: SigningKey) => {
    const path = join(dir, `${k.keyId.replace(/[^\w-]/g, '_')}.pub.pem`)
    writeFileSync(path, k.publicKeyPem)
    return path
  }
  return spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', `sqlite:${join(dir, db)}`, '--signing-key', file(key), '--previous-keys', previous.map(file).join(',')], { encoding: 'utf8', timeout: 20_000 })
}

it('a restart on a new key appends audit.key_rotated signed by it; igw audit verify passes; a second restart adds nothing', async () => {
  const first = await start('main.db', keyA)
  await writeTenant(first, 'initech')
  await stop(first)

  const second = await start('main.db', keyB, [keyA])
  const rows = await rotations(second)
  expect(rows).toHaveLength(1)
  const [row] = rows
  expect(row!.key_id).toBe(keyB.keyId)
  expect(verifySignature(keyB.publicKey, row!.hash, row!.signature)).toBe(true)
  expect(JSON.parse(row!.before_json)).toEqual({ keyId: keyA.keyId })
  expect(JSON.parse(row!.after_json)).toEqual({ keyId: keyB.keyId })
  await stop(second)

  const cli = cliVerify('main.db', keyB, [keyA])
  expect(cli.status, cli.stdout + cli.stderr).toBe(0)
  expect(cli.stdout).toMatch(/audit log OK/)

  const third = await start('main.db', keyB, [keyA])
  expect(await rotations(third)).toHaveLength(1)
  await stop(third)
}, 30_000)

it('without --previous-keys (no config.resign) the new key still enters the chain at start', async () => {
  const first = await start('plain.db', keyA)
  await writeTenant(first, 'hooli')
  await stop(first)
  const cp = await start('plain.db', keyB)
  const head = (await cp.db.query<Row>('SELECT * FROM audit_log ORDER BY seq DESC LIMIT 1'))[0]!
  expect(head).toMatchObject({ action: 'audit.key_rotated', key_id: keyB.keyId })
  expect(verifySignature(keyB.publicKey, head.hash, head.signature)).toBe(true)
  expect(await verifyAudit(cp.db, [keyB.publicKey, keyA.publicKey])).toMatchObject({ ok: true, problems: [] })
  await stop(cp)
}, 30_000)

it('replicas: two starting on the new key at once write one entry; one starting while the old key still writes (rolling restart) adds none', async () => {
  await stop(await start('replicas.db', keyA))
  const [r1, r2] = await Promise.all([start('replicas.db', keyB, [keyA]), start('replicas.db', keyB, [keyA])])
  expect(await rotations(r1)).toHaveLength(1)
  // An old replica, still on key A, writes after the new key's first entry.
  await r1.db.transaction((tx) => appendAudit(tx, keyA, { actor: 'bob', action: 'tenants.put', resource: 'tenants/acme', after: { tier: 'silver' } }))
  await stop(r1)
  await stop(r2)
  const r3 = await start('replicas.db', keyB, [keyA])
  expect(await rotations(r3)).toHaveLength(1)
  expect(await verifyAudit(r3.db, [keyB.publicKey, keyA.publicKey])).toMatchObject({ ok: true, problems: [] })
  await stop(r3)
}, 30_000)

it('a chain the current key signed nothing of is reported: its tail was signed again with a replaced key (or it never ran on that key)', async () => {
  // What a forger holding key A leaves: the marker and everything after it removed, the rest
  // (re-)signed by A. Equivalent here: a log only A ever signed, verified as B's (B replaced A).
  const cp = await start('forged.db', keyA)
  await writeTenant(cp, 'acme-forged')
  await stop(cp)
  const r = cliVerify('forged.db', keyB, [keyA])
  expect(r.status).toBe(1)
  expect(r.stdout + r.stderr).toContain(`the current key ${keyB.keyId} signed no entry`)
  // On its own key it verifies.
  expect(cliVerify('forged.db', keyA, []).status).toBe(0)
})
