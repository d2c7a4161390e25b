// Two control planes on one database with different signing keys: proxies pin the key of the
// snapshots they get and NACK versions signed with the other one. The instance that starts with
// another key than the head's says so at start. Real SQLite database shared by two instances.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { capturingLogger, startTestControlPlane } from '../helpers/control-plane.ts'

describe('a replica whose signing key is not the head snapshot\'s', () => {
  it('warns at start naming both key ids; one with the same key does not', async () => {
    const first = await startTestControlPlane()
    const dbSpec = first.dbSpec
    await first.close()
    // Same database, same key (same directory): quiet.
    const same = capturingLogger()
    const again = await startTestControlPlane({ dir: first.dir, db: dbSpec, seed: null, logger: same.logger })
    const keyId = again.store.key.keyId
    await again.close()
    expect(same.lines.filter((l) => String(l.msg).includes('signed with another key'))).toEqual([])
    // Same database, a key of its own (another directory): warned.
    const other = capturingLogger()
    const replica = await startTestControlPlane({ dir: mkdtempSync(join(tmpdir(), 'igw-cp-replica-')), db: dbSpec, seed: null, logger: other.logger })
    try {
      const warn = other.lines.find((l) => String(l.msg).includes('signed with another key'))
      expect(warn).toMatchObject({ headKeyId: keyId, keyId: replica.store.key.keyId })
      expect(replica.store.key.keyId).not.toBe(keyId)
    } finally {
      await replica.close()
      rmSync(first.dir, { recursive: true, force: true })
      rmSync(replica.dir, { recursive: true, force: true })
    }
  })
})
