// One atomic file writer (proxy/atomic-file.ts) for the control-plane client's state dir, the quota
// state and owed files, the DLP keyring and the signing key: a temp file of the write's own
// (pid, thread, unique part), created with the caller's mode, fsynced, renamed (or linked into
// place to create only), the directory fsynced; a failed write leaves no temp file. The keyring's
// writer left its temp file behind on a full disk (written outside its cleanup): a partial copy
// of the keyring's secrets, and the space that ran out.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { threadId } from 'node:worker_threads'
import { afterAll, describe, expect, it } from 'vitest'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { addKey, ensureKeyringFile } from '../../filters/dlp/keyring.ts'
import { atomicTempPath, writeFileAtomicSync, writeTemp } from '../../proxy/atomic-file.ts'
import { canMountTmpfs, fillUntilFull, releaseMounts, tinyMount } from '../helpers/tmpfs.ts'

afterAll(() => releaseMounts())

const tempDir = () => mkdtempSync(join(tmpdir(), 'igw-atomic-'))

describe('atomic file writes (sweep 34b)', () => {
  it('temp names carry the pid, the thread and a part of their own', () => {
    const a = atomicTempPath('/x/f.json')
    expect(a).toMatch(new RegExp(`^/x/f\\.json\\.${process.pid}\\.${threadId}\\.[0-9a-f]{12}\\.tmp$`))
    expect(atomicTempPath('/x/f.json')).not.toBe(a)
    expect(atomicTempPath('/x/f.json', 7)).toBe(`/x/f.json.${process.pid}.${threadId}.7.tmp`)
  })

  it('replaces the file whole with the given mode and leaves nothing else', () => {
    const dir = tempDir()
    const path = join(dir, 'f.json')
    writeFileSync(path, 'old', { mode: 0o644 })
    writeFileAtomicSync(path, 'new', { mode: 0o600 })
    expect(readFileSync(path, 'utf8')).toBe('new')
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(readdirSync(dir)).toEqual(['f.json'])
  })

  it('exclusive: creates once, the second create is EEXIST and changes nothing', () => {
    const dir = tempDir()
    const path = join(dir, 'key')
    writeFileAtomicSync(path, 'first', { exclusive: true })
    let code: string | undefined
    try {
      writeFileAtomicSync(path, 'second', { exclusive: true })
    } catch (err) {
      code = (err as NodeJS.ErrnoException).code
    }
    expect(code).toBe('EEXIST')
    expect(readFileSync(path, 'utf8')).toBe('first')
    expect(readdirSync(dir)).toEqual(['key'])
  })

  it('a rename that fails (the target is a directory) leaves no temp file', () => {
    const dir = tempDir()
    const path = join(dir, 'busy')
    mkdirSync(path)
    writeFileSync(join(path, 'inside'), 'x')
    expect(() => writeFileAtomicSync(path, 'data')).toThrow()
    expect(readdirSync(dir)).toEqual(['busy'])
  })

  it('the signing key is created through it: one file, owner-only, no temp left', () => {
    const dir = tempDir()
    const path = join(dir, 'keys', 'signing-key.pem')
    const key = loadOrCreateSigningKey(path)
    expect(loadOrCreateSigningKey(path).keyId).toBe(key.keyId)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(readdirSync(join(dir, 'keys'))).toEqual(['signing-key.pem'])
  })

  it.skipIf(!canMountTmpfs)('a full disk: the write fails with ENOSPC and leaves no temp file (the keyring\'s did)', async () => {
    const mount = tinyMount('256k')!
    const keyring = join(mount, 'dlp', 'keyring.json')
    expect(ensureKeyringFile(keyring).created).toBe(true)
    const before = readFileSync(keyring, 'utf8')
    fillUntilFull(join(mount, 'filler'))
    let code: string | undefined
    try {
      addKey(keyring, 'k2')
    } catch (err) {
      code = (err as NodeJS.ErrnoException).code
    }
    expect(code).toBe('ENOSPC')
    expect(readdirSync(join(mount, 'dlp'))).toEqual(['keyring.json'])
    expect(readFileSync(keyring, 'utf8')).toBe(before)

    const state = join(mount, 'state.json')
    expect(() => writeFileAtomicSync(state, 'x'.repeat(64 * 1024))).toThrow(/ENOSPC/)
    await expect(writeTemp(atomicTempPath(state, 1), 'y'.repeat(64 * 1024))).rejects.toThrow(/ENOSPC/)
    expect(readdirSync(mount).sort()).toEqual(['dlp', 'filler'])
    rmSync(join(mount, 'filler'))
  })
})
