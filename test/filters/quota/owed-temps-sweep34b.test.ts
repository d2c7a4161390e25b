// The owed-units file (outage usage not yet in Redis, beside the state file) was written through a
// fixed `<file>.tmp` that no sweep knew: a writer killed mid-write left it for ever. Its temps are
// now named as the state file's are (`.<pid>.<thread>.<n>.tmp`) and the one stale-temp sweep, which
// also runs at start, removes those of a process that is gone and keeps a live one's.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'
import { owedFilePath, writeOwedFile } from '../../../filters/quota/state-file.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

describe('owed-units temp files (sweep 34b)', () => {
  it('a dead process\'s leftover temp is removed at start, a live one\'s is kept', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-owedtmp-'))
    const stateFile = join(dir, 'quota-state.json')
    const dead = spawnSync('true').pid! // exited: no process has this pid any more
    const owed = owedFilePath(stateFile, 1_700_000_000_000, 3)
    const deadTemp = `${owed}.${dead}.3.1.tmp`
    const liveTemp = `${owed}.${process.ppid}.2.4.tmp`
    // An older writer's fixed name, from before this process started.
    const oldTemp = `${owed}.tmp`
    for (const f of [deadTemp, liveTemp, oldTemp]) writeFileSync(f, '{"version":1,"owed":[')
    const past = (Date.now() - 3_600_000) / 1000
    utimesSync(oldTemp, past, past)
    // Not ours: an operator's file next to it stays whatever its name.
    const operator = join(dir, 'quota-state.json.owed.notes.tmp')
    writeFileSync(operator, 'keep')
    const config = validateConfig({
      routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
      tenants: { acme: {} },
      quotas: { defaults: { graphql: { limitPerDay: 1000 } }, stateFile, flushIntervalMs: 600_000 },
    })
    const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'silent' }))
    const a = rt.attach(config, new Registry(), undefined)
    try {
      await waitUntil(() => !existsSync(deadTemp), 5_000)
      await sleep(100)
      expect(existsSync(oldTemp)).toBe(false)
      expect(existsSync(liveTemp)).toBe(true)
      expect(existsSync(operator)).toBe(true)
    } finally {
      await rt.detach(a)
    }
  })

  it('a write leaves no temp behind and is not stopped by a leftover of the old fixed name', () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-owedtmp-'))
    const path = owedFilePath(join(dir, 'quota-state.json'), 1, 1)
    writeFileSync(`${path}.tmp`, 'left by a killed writer')
    writeOwedFile(path, { version: 1, savedAt: Date.now(), proxy: 'p', owed: [] })
    expect(readdirSync(dir).sort()).toEqual(['quota-state.json.owed.1.1.json', 'quota-state.json.owed.1.1.json.tmp'])
  })
})
