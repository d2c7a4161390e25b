// The state file's writers: the periodic (async) flush and the shutdown (sync) flush of one
// thread may overlap — SIGTERM during a flush. The newer snapshot must be what is on disk, as a
// whole document, and no temporary file may be left behind.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { readStateFile, type QuotaStateDocument } from '../../../config/quota-usage.ts'
import { writeStateFile, writeStateFileSync } from '../../../filters/quota/state-file.ts'

function doc(used: number, tenants: number): QuotaStateDocument {
  const day = Math.floor(Date.now() / 86_400_000)
  return { version: 1, savedAt: Date.now(), tenants: Array.from({ length: tenants }, (_, i) => ({ tenant: `t${i}`, kinds: { graphql: { day, used } } })) }
}

describe('state file writers (sweep 14d)', () => {
  it('a shutdown write during a periodic write: the shutdown snapshot is what stays, whole', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-state-'))
    const path = join(dir, 'quota-state.json')
    for (let round = 0; round < 20; round++) {
      // The periodic flush's (older, longer) snapshot is being written when SIGTERM's comes.
      const periodic = writeStateFile(path, doc(round, 2_000)).then(
        () => undefined,
        (err: Error) => err,
      )
      writeStateFileSync(path, doc(round + 1_000, 3))
      await periodic
      const read = readStateFile(path)
      expect(read.problem, `round ${round}: ${read.problem} (${readFileSync(path, 'utf8').slice(0, 80)})`).toBeUndefined()
      expect(read.doc!.tenants).toHaveLength(3)
      expect(read.doc!.tenants[0]!.kinds.graphql!.used).toBe(round + 1_000)
    }
    expect(readdirSync(dir)).toEqual(['quota-state.json'])
  })

  it('two periodic writes in flight: the later snapshot wins', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-state-'))
    const path = join(dir, 'quota-state.json')
    for (let round = 0; round < 20; round++) {
      const a = writeStateFile(path, doc(round, 2_000))
      const b = writeStateFile(path, doc(round + 1_000, 3))
      await Promise.allSettled([a, b])
      const read = readStateFile(path)
      expect(read.problem).toBeUndefined()
      expect(read.doc!.tenants[0]!.kinds.graphql!.used).toBe(round + 1_000)
    }
    expect(readdirSync(dir)).toEqual(['quota-state.json'])
  })
})
