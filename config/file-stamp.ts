// What changes when a file is replaced or rewritten in place: device and inode (an atomic rename
// or a Secret's symlink swap gives a new one, even at the same size and a coarse mtime), size,
// mtime and ctime. The ctime is the kernel's own: a copy over the file that keeps the source's
// mtime (`cp -p`, `rsync --inplace -t`, `install -p` from a build with a normalized mtime) left
// inode, size and mtime as they were, and a rotated key of the same length (every Ed25519 or
// RSA-2048 PEM is) was never loaded. '' when it cannot be read (its loader says why).
import { statSync } from 'node:fs'

export function fileStamp(path: string): string {
  try {
    const s = statSync(path)
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`
  } catch {
    return ''
  }
}
