// The state file is shared by the worker threads of a process (one table, one file). A periodic
// (async) write of one thread that finished after another thread's later write — the shutdown
// write SIGTERM starts in every thread — renamed its older snapshot over the newer one: only
// writes of the same thread were ordered. The order is now kept in the shared table.
import { mkdtempSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import { readStateFile, type QuotaStateDocument } from '../../../config/quota-usage.ts'
import { QUOTA_SHARED_BYTES, QuotaTable } from '../../../filters/quota/shared-table.ts'
import { writeStateFile } from '../../../filters/quota/state-file.ts'

function doc(used: number): QuotaStateDocument {
  const day = Math.floor(Date.now() / 86_400_000)
  return { version: 1, savedAt: Date.now(), tenants: [{ tenant: 'acme', kinds: { graphql: { day, used } } }] }
}

// The other thread: writes its (newer) snapshot synchronously, as at shutdown, then says so.
const OTHER_THREAD = `
const { workerData } = require('node:worker_threads')
import(workerData.shared).then(({ QuotaTable }) => import(workerData.stateFile).then(({ writeStateFileSync }) => {
  const table = new QuotaTable(workerData.buffer)
  const done = new Int32Array(workerData.done)
  try {
    writeStateFileSync(workerData.path, workerData.doc, table)
    Atomics.store(done, 0, 1)
  } catch (err) {
    Atomics.store(done, 0, 2)
  }
  Atomics.notify(done, 0)
}))
`

describe('state file writes across worker threads (sweep 15)', () => {
  it('a periodic write that finishes after another thread\'s shutdown write does not replace it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-state15-'))
    const path = join(dir, 'quota-state.json')
    const buffer = new SharedArrayBuffer(QUOTA_SHARED_BYTES)
    const table = new QuotaTable(buffer)
    for (let round = 0; round < 3; round++) {
      // This thread's periodic flush starts (snapshot: `round` units) …
      const periodic = writeStateFile(path, doc(round), table)
      // … and before it can finish, another thread writes its later snapshot at shutdown. This
      // thread is blocked meanwhile (Atomics.wait), so the periodic write lands after it.
      const done = new SharedArrayBuffer(4)
      const worker = new Worker(OTHER_THREAD, {
        eval: true,
        workerData: {
          shared: new URL('../../../filters/quota/shared-table.ts', import.meta.url).href,
          stateFile: new URL('../../../filters/quota/state-file.ts', import.meta.url).href,
          buffer,
          done,
          path,
          doc: doc(round + 100),
        },
      })
      expect(Atomics.wait(new Int32Array(done), 0, 0, 20_000)).not.toBe('timed-out')
      expect(Atomics.load(new Int32Array(done), 0)).toBe(1)
      await periodic
      await worker.terminate()
      const read = readStateFile(path)
      expect(read.problem).toBeUndefined()
      expect(read.doc!.tenants[0]!.kinds.graphql!.used, `round ${round}`).toBe(round + 100)
    }
    expect(readdirSync(dir)).toEqual(['quota-state.json'])
  })
})
