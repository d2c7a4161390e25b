// One way to put a file on disk whole or not at all, for every writer of igw's own files (the
// control-plane client's state dir, the quota state and owed-units files, the DLP keyring, the
// control plane's signing key). The rule:
//  - the bytes go to a temporary file beside the target, named `<file>.<pid>.<thread>.<unique>.tmp`:
//    worker threads share the pid and a periodic async write can overlap a synchronous one, so
//    each write has a name of its own, and a sweep can tell from the pid whose leftover it is;
//  - the temporary file is created exclusively with the caller's mode (a file holding secrets is
//    never readable by others, not even for a moment), written, fsynced and closed;
//  - then renamed over the target, or, to create only, hard-linked into place (EEXIST when the
//    target exists: exactly one of several racing creators wins, and no reader meets a half-written
//    file); a volume without hard links gets a plain exclusive create instead;
//  - then the directory is fsynced where the file system allows, so the rename survives a power
//    cut too (without it a power cut soon after could leave the old file, or an empty one);
//  - a write that fails removes its temporary file (a partial copy held part of the data, secrets
//    included, and the space that ran out) and throws the write's own error.
import { randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, linkSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { open, rm } from 'node:fs/promises'
import { dirname } from 'node:path'
import { threadId } from 'node:worker_threads'

export interface AtomicWriteOptions {
  /** Permission bits of the new file (before the umask); 0o600 unless given. */
  mode?: number
  /** Create only: never replace an existing file (then the error's code is EEXIST). */
  exclusive?: boolean
  /**
   * The temporary file's path, for a writer whose temporary names a sweep of its own (and its
   * operators) already know; a leftover of that name is removed first. Default: atomicTempPath.
   */
  tmp?: string
}

/** The temporary file of one write of `path`; `unique` (default: random) tells this process's and thread's writes apart. */
export function atomicTempPath(path: string, unique: string | number = randomBytes(6).toString('hex')): string {
  return `${path}.${process.pid}.${threadId}.${unique}.tmp`
}

/**
 * True while process `pid` exists (EPERM: it does, as another user): whether the writer a temporary
 * file's name gives may still be at work (the sweeps of leftovers). A pid ≤ 0 names none (kill would signal a group).
 */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Errors of link(2) on file systems without hard links (some network shares, FAT). */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'ENOSYS'])

function removeQuietly(path: string): void {
  try {
    rmSync(path, { force: true })
  } catch {
    // the write's own error is the one to report
  }
}

/** Create `tmp` exclusively with `mode`, write `data`, fsync, close; on failure it is gone and the error thrown. */
export function writeTempSync(tmp: string, data: string | Uint8Array, mode = 0o600): void {
  let fd: number | undefined
  try {
    fd = openSync(tmp, 'wx', mode)
    writeFileSync(fd, data)
    fsyncSync(fd)
    const opened = fd
    fd = undefined
    closeSync(opened)
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd)
      } catch {}
    }
    removeQuietly(tmp)
    throw err
  }
}

/** writeTempSync without blocking the event loop (periodic writes). */
export async function writeTemp(tmp: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  let fh: Awaited<ReturnType<typeof open>> | undefined
  try {
    fh = await open(tmp, 'wx', mode)
    await fh.writeFile(data)
    await fh.sync()
    const opened = fh
    fh = undefined
    await opened.close()
  } catch (err) {
    await fh?.close().catch(() => undefined)
    await rm(tmp, { force: true }).catch(() => undefined)
    throw err
  }
}

/** fsync a directory (a rename or link in it reaches the disk); some file systems refuse: the file itself is whole either way. */
export function syncDirSync(dir: string): void {
  try {
    const fd = openSync(dir, 'r')
    try {
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
  } catch {
    // EINVAL, EISDIR, EPERM… on file systems without directory fsync
  }
}

export async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r')
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
  } catch {
    // as syncDirSync
  }
}

/** Write `path` atomically by the rule above (synchronous: a closing thread, a CLI, a start). */
export function writeFileAtomicSync(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): void {
  const mode = options.mode ?? 0o600
  const tmp = options.tmp ?? atomicTempPath(path)
  // A fixed name may hold a crashed run's leftover (its mode would not be ours with a plain open).
  if (options.tmp !== undefined) rmSync(tmp, { force: true })
  writeTempSync(tmp, data, mode)
  try {
    if (options.exclusive) createOnceSync(tmp, path, data, mode)
    else renameSync(tmp, path)
  } catch (err) {
    removeQuietly(tmp)
    throw err
  }
  if (options.exclusive) removeQuietly(tmp) // linked: the temporary name goes, the file stays
  syncDirSync(dirname(path))
}

/** Put the complete `tmp` at `path` unless something is there already (then EEXIST). */
function createOnceSync(tmp: string, path: string, data: string | Uint8Array, mode: number): void {
  try {
    linkSync(tmp, path)
  } catch (err) {
    if (!NO_HARD_LINKS.has((err as NodeJS.ErrnoException).code ?? '')) throw err
    // An exclusive create instead: it never replaces a file either (a reader may meet it half-written).
    let fd: number | undefined
    try {
      fd = openSync(path, 'wx', mode)
      writeFileSync(fd, data)
      fsyncSync(fd)
    } finally {
      if (fd !== undefined) closeSync(fd)
    }
  }
}
