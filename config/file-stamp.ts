// What changes when a file is replaced or rewritten in place: inode (an atomic rename or a
// Secret's symlink swap gives a new one, even at the same size and a coarse mtime), size and
// mtime. '' when it cannot be read (its loader says why).
import { statSync } from 'node:fs'

export function fileStamp(path: string): string {
  try {
    const s = statSync(path)
    return `${s.ino}:${s.size}:${s.mtimeMs}`
  } catch {
    return ''
  }
}
