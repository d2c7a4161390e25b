// A real, tiny file system to fill up (disk-full tests): a tmpfs mounted on a temporary directory.
// Mounting needs root (CAP_SYS_ADMIN); where it is refused, `canMountTmpfs` is false and the tests
// skip themselves.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const mounts: string[] = []
const dirs: string[] = []

/** A fresh tmpfs of `size` (e.g. "2m") on a temporary directory; undefined when this process may not mount. */
export function tinyMount(size: string): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), 'igw-tmpfs-'))
  dirs.push(dir)
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0777`, 'tmpfs', dir], { encoding: 'utf8' })
  if (r.status !== 0) return undefined
  mounts.push(dir)
  return dir
}

/** Whether this process may mount a tmpfs (tried once, at import). */
export const canMountTmpfs = (() => {
  const d = tinyMount('64k')
  if (d === undefined) return false
  spawnSync('umount', [d])
  mounts.pop()
  return true
})()

/** Unmounts and removes every tmpfs made here (call in afterAll). */
export function releaseMounts(): void {
  for (const m of mounts.splice(0)) spawnSync('umount', ['-l', m])
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
}

/** Writes random bytes to `file` until the file system refuses (ENOSPC), the last block a byte at a time. */
export function fillUntilFull(file: string): void {
  const fd = openSync(file, 'w')
  const chunk = randomBytes(16 * 1024)
  try {
    for (let i = 0; i < 100_000; i++) {
      try {
        writeSync(fd, chunk)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
        throw err
      }
    }
    for (let i = 0; i < 16 * 1024; i++) {
      try {
        writeSync(fd, chunk, 0, 1)
      } catch {
        break
      }
    }
  } finally {
    closeSync(fd)
  }
}
