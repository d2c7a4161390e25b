// `--config` seeds only an empty store. A control plane restarted with an edited seed file over a
// store that already holds versions used to ignore the file without a word: the operator believed
// the proxies ran it. It now warns, naming the file and the head version it keeps.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { startControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { capturingLogger, seedDocument, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-seed-q28-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

async function start(seed: ReturnType<typeof seedDocument>, seedFile: string) {
  const { logger, lines } = capturingLogger()
  const cp = await startControlPlane({ db: `sqlite:${join(dir, 'igw.db')}`, host: '127.0.0.1', port: 0, auth: { secret: TEST_AUTH_SECRET }, signingKey: loadOrCreateSigningKey(join(dir, 'key.pem')), seed, seedFile, logger })
  return { cp, warnings: lines.filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.includes('--config')) }
}

describe('a --config seed over a store that already holds a version', () => {
  it('is committed into an empty store without a warning', async () => {
    const { cp, warnings } = await start(seedDocument(), '/etc/igw/seed-v1.yaml')
    try {
      expect(cp.store.head()?.version).toBe(1)
      expect(warnings).toEqual([])
    } finally {
      await cp.close()
    }
  })

  it('is not used, and a warning names the file and the head version (and that it differs)', async () => {
    const edited = seedDocument('http://127.0.0.1:10')
    const { cp, warnings } = await start(edited, '/etc/igw/seed-v2.yaml')
    try {
      expect(cp.store.head()?.version).toBe(1)
      expect(cp.store.head()?.document).toEqual(seedDocument())
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatchObject({ seedFile: '/etc/igw/seed-v2.yaml', headVersion: 1, differsFromHead: true })
      expect(warnings[0]!.msg).toContain('/etc/igw/seed-v2.yaml')
      expect(warnings[0]!.msg).toContain('version 1')
    } finally {
      await cp.close()
    }
  })

  it('the same seed as the head is still named, as not differing', async () => {
    const { cp, warnings } = await start(seedDocument(), '/etc/igw/seed-v1.yaml')
    try {
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatchObject({ seedFile: '/etc/igw/seed-v1.yaml', headVersion: 1, differsFromHead: false })
    } finally {
      await cp.close()
    }
  })
})
