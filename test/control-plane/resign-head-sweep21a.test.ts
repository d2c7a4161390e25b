// After the control plane's signing key was replaced (restarted with a new --signing-key and the
// old one in --previous-keys), the head config version was still signed with the old key: a proxy
// pinned to the new key refused it, and one starting then had no config until the next commit.
// Now the head is signed again with the new key at start — only after it verifies with the old.
// Real parts: control planes on one SQLite file, the proxy's own verification, a real `igw proxy`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { pino } from 'pino'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { generateSigningKey, type SigningKey } from '../../control-plane/signing.ts'
import { signSnapshot } from '../../control-plane/snapshot.ts'
import { verifyEnvelope, SignatureMismatch } from '../../proxy/control-plane-client.ts'
import { connectedProxyArgs, connectedProxyEnv, runningVersion, seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-resign-'))
const running: (ControlPlane | SpawnedIgw)[] = []
const oldKey = generateSigningKey()
const newKey = generateSigningKey()
afterAll(async () => {
  for (const r of running.reverse()) await ('stop' in r ? r.stop() : r.close())
  rmSync(dir, { recursive: true, force: true })
})

async function start(name: string, key: SigningKey, previous: SigningKey[] = []): Promise<ControlPlane> {
  const cp = await startControlPlane({
    db: `sqlite:${join(dir, `${name}.db`)}`,
    host: '127.0.0.1',
    port: 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: key,
    seed: seedDocument(),
    logger: pino({ level: 'silent' }),
    ...(previous.length > 0 ? { previousKeys: previous.map((k) => k.publicKey) } : {}),
  })
  running.push(cp)
  return cp
}

/** The first snapshot a new proxy's stream gets. */
async function firstSnapshot(cp: ControlPlane, proxyId: string): Promise<unknown> {
  const token = await mintToken(TEST_AUTH_SECRET, { sub: proxyId, roles: ['proxy'] })
  const stream = new AbortController()
  const res = await fetch(`${cp.url}/v1/stream?proxy=${proxyId}`, { headers: { authorization: `Bearer ${token}` }, signal: stream.signal })
  const reader = res.body!.getReader()
  let text = ''
  try {
    while (!text.includes('\n\n')) {
      const { value, done } = await reader.read()
      if (done) break
      text += Buffer.from(value).toString()
    }
  } finally {
    stream.abort()
  }
  const data = /^data: (.*)$/m.exec(text)
  if (data === null) throw new Error(`no snapshot event: ${text}`)
  return JSON.parse(data[1]!)
}

let head: number
beforeAll(async () => {
  const cp = await start('main', oldKey)
  head = cp.store.head()!.version
  await cp.close()
  running.pop()
}, 30_000)

it('a new proxy pinned to the new key takes the head at once; the old key’s signature was checked first', async () => {
  const cp = await start('main', newKey, [oldKey])
  const envelope = await firstSnapshot(cp, 'fresh')
  expect(verifyEnvelope(envelope, newKey.publicKey)).toMatchObject({ version: head })
  // The same payload as before (version, digest, issuedAt): only its signature is new.
  expect(JSON.parse((envelope as { payload: string }).payload)).toMatchObject({ version: head, digest: cp.store.head()!.digest })
  const audit = (await (await fetch(`${cp.url}/v1/audit`, { headers: { authorization: `Bearer ${await mintToken(TEST_AUTH_SECRET, { sub: 'a', roles: ['admin'] })}` } })).json()) as { items: { action: string; configVersion: number }[] }
  expect(audit.items.filter((e) => e.action === 'config.resign')).toMatchObject([{ configVersion: head }])

  // A real proxy, pinned to the new key, starts on it (it refused the head and had no config).
  const work = mkdtempSync(join(dir, 'proxy-'))
  const keyFile = join(work, 'cp.pub.pem')
  writeFileSync(keyFile, newKey.publicKeyPem)
  const proxy = await spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: join(work, 'state'), id: 'fresh-proxy' }), await connectedProxyEnv('proxy-fresh'))
  running.push(proxy)
  expect(await runningVersion(proxy)).toBe(head)

  // Started again: nothing more to sign, no second entry.
  await cp.close()
  running.splice(running.indexOf(cp), 1)
  const again = await start('main', newKey, [oldKey])
  expect(verifyEnvelope(await firstSnapshot(again, 'fresh-2'), newKey.publicKey)).toMatchObject({ version: head })
  const entries = (await again.store.db.query<{ n: number }>("SELECT count(*) AS n FROM audit_log WHERE action = 'config.resign'"))[0]!.n
  expect(entries).toBe(1)
}, 60_000)

it('a head that does not verify with a previous key (edited in the database) is not signed with the new key', async () => {
  const first = await start('edited', oldKey)
  const h = first.store.head()!
  await first.close()
  running.pop()
  // Someone with database access replaces the document, signed by a key of their own.
  const forged = signSnapshot(generateSigningKey(), h.version, JSON.stringify({ ...h.document, routes: [] }))
  const db = new DatabaseSync(join(dir, 'edited.db'))
  db.prepare('UPDATE config_versions SET envelope = ? WHERE version = ?').run(JSON.stringify(forged), h.version)
  db.close()
  const cp = await start('edited', newKey, [oldKey])
  const envelope = await firstSnapshot(cp, 'p')
  expect(() => verifyEnvelope(envelope, newKey.publicKey)).toThrow(SignatureMismatch)
  expect(envelope).toEqual(forged)
})
