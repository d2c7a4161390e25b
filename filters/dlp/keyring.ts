// DLP keys live in a keyring behind a small KMS interface, never in the config document (which
// the control plane stores, diffs and pushes). The default provider is a local JSON file
// (mode 0600). Rotation = add a key, then promote it: new tokens use the active key, and every
// key still in the ring reverses the tokens it made.
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { writeFileAtomicSync } from '../../proxy/filter.ts'

/** Key ids appear inside tokens (`tok_<type>_<keyId>_…`), so they may not contain "_". */
export const KEY_ID = /^[A-Za-z0-9]{1,32}$/

/** 32 bytes: 43 characters of one base64 alphabet, optionally padded. */
const SECRET = /^(?:[A-Za-z0-9_-]{43}|[A-Za-z0-9+/]{43})=?$/

export interface KeyEntry {
  readonly id: string
  /** 32 random bytes; token and hash keys are derived from it (HKDF). */
  readonly secret: Uint8Array
  readonly created: string
}

export interface KeyringSnapshot {
  readonly active: string
  readonly keys: ReadonlyMap<string, KeyEntry>
}

/**
 * What a KMS must offer the tokenizer: the current keys (a cloud KMS would return data keys it
 * unwrapped) and a cheap way to tell whether they changed since the last load.
 */
export interface KeyProvider {
  readonly description: string
  load(): Promise<KeyringSnapshot>
  /** A value that changes when the keyring changes (file mtime, KMS version). */
  version(): Promise<string>
  /**
   * After load(): how the keys just read are exposed beyond igw (a keyring file that group or
   * others may read), or undefined. The caller warns; the keys are still used.
   */
  exposure?(): KeyExposure | undefined
}

/** A keyring file whose permission bits let someone besides its owner read or change it. */
export interface KeyExposure {
  readonly path: string
  /** Permission bits as an octal string, e.g. "0644". */
  readonly mode: string
}

/**
 * Permission bits of a keyring file that reach beyond its owner and its group: any access for
 * others, write for the group. Group read is not one: a Kubernetes pod's `fsGroup` gives the
 * Secret's files group read (0440), and that group is the pod's own.
 */
export const KEYRING_EXPOSED_BITS = 0o027

/** "0644" for a keyring file others may read, undefined for 0600/0440/0400. */
export function exposedMode(mode: number): string | undefined {
  if ((mode & KEYRING_EXPOSED_BITS) === 0) return undefined
  return `0${(mode & 0o777).toString(8).padStart(3, '0')}`
}

interface KeyringFile {
  format: 'igw-dlp-keyring/1'
  active: string
  keys: { id: string; created: string; secret: string }[]
  comment?: string
}

export class KeyringError extends Error {}

export function parseKeyring(text: string, source: string): KeyringSnapshot {
  let doc: KeyringFile
  try {
    doc = JSON.parse(text) as KeyringFile
  } catch {
    throw new KeyringError(`${source}: not JSON`)
  }
  if (doc === null || typeof doc !== 'object' || doc.format !== 'igw-dlp-keyring/1') throw new KeyringError(`${source}: expected "format": "igw-dlp-keyring/1"`)
  if (!Array.isArray(doc.keys) || doc.keys.length === 0) throw new KeyringError(`${source}: keys: expected at least one key`)
  const keys = new Map<string, KeyEntry>()
  doc.keys.forEach((k, i) => {
    if (typeof k?.id !== 'string' || !KEY_ID.test(k.id)) throw new KeyringError(`${source}: keys[${i}].id: expected 1-32 letters or digits`)
    if (keys.has(k.id)) throw new KeyringError(`${source}: keys[${i}].id: duplicate key id "${k.id}"`)
    // Buffer.from(…, 'base64url') skips characters outside the alphabet: a pasted secret with a
    // stray character or a line break would load as some other key, silently. Exactly 32 bytes in
    // base64url (or standard base64, as KMS tools print it), optional padding, nothing else.
    if (typeof k.secret !== 'string' || !SECRET.test(k.secret)) throw new KeyringError(`${source}: keys[${i}].secret: expected 32 bytes, base64url`)
    const secret = Buffer.from(k.secret, k.secret.includes('+') || k.secret.includes('/') ? 'base64' : 'base64url')
    if (secret.length !== 32) throw new KeyringError(`${source}: keys[${i}].secret: expected 32 bytes, base64url`)
    keys.set(k.id, { id: k.id, secret: new Uint8Array(secret), created: String(k.created ?? '') })
  })
  if (typeof doc.active !== 'string' || !keys.has(doc.active)) throw new KeyringError(`${source}: active: expected the id of a key in the ring`)
  return { active: doc.active, keys }
}

export function serializeKeyring(ring: KeyringSnapshot, comment?: string): string {
  const doc: KeyringFile = {
    format: 'igw-dlp-keyring/1',
    ...(comment ? { comment } : {}),
    active: ring.active,
    keys: [...ring.keys.values()].map((k) => ({ id: k.id, created: k.created, secret: Buffer.from(k.secret).toString('base64url') })),
  }
  return `${JSON.stringify(doc, null, 2)}\n`
}

function newKey(id: string): KeyEntry {
  return { id, secret: new Uint8Array(randomBytes(32)), created: new Date().toISOString() }
}

/**
 * Write atomically with owner-only permissions (proxy/atomic-file.ts: a temp file of this thread's
 * own, fsynced, renamed). Exclusive create = the complete temp file linked into place (EEXIST when
 * the file exists): a thread that loses the race never sees a created-but-still-empty keyring.
 */
function writeKeyringFile(path: string, ring: KeyringSnapshot, exclusive: boolean, comment?: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  writeFileAtomicSync(path, serializeKeyring(ring, comment), { mode: 0o600, exclusive })
}

/**
 * Create the keyring with one fresh key when the file does not exist. Several worker threads
 * may race here: the exclusive create lets exactly one win, the others read its file.
 */
export function ensureKeyringFile(path: string): { created: boolean } {
  try {
    writeKeyringFile(path, { active: 'k1', keys: new Map([['k1', newKey('k1')]]) }, true, 'created by igw on first use; keep it secret and backed up: tokens cannot be reversed without it')
    return { created: true }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { created: false }
    throw err
  }
}

/** Rotation, step 1: add a new (inactive) key; returns its id. */
export function addKey(path: string, id?: string): string {
  const ring = parseKeyring(readFileSync(path, 'utf8'), path)
  let kid = id
  if (kid === undefined) {
    let n = ring.keys.size + 1
    while (ring.keys.has(`k${n}`)) n++
    kid = `k${n}`
  }
  if (!KEY_ID.test(kid)) throw new KeyringError(`key id "${kid}": expected 1-32 letters or digits`)
  if (ring.keys.has(kid)) throw new KeyringError(`key id "${kid}" already exists`)
  const keys = new Map(ring.keys)
  keys.set(kid, newKey(kid))
  writeKeyringFile(path, { active: ring.active, keys }, false)
  return kid
}

/** Rotation, step 2: new tokens use this key; older keys stay to reverse older tokens. */
export function promoteKey(path: string, id: string): void {
  const ring = parseKeyring(readFileSync(path, 'utf8'), path)
  if (!ring.keys.has(id)) throw new KeyringError(`no key "${id}" in ${path}`)
  writeKeyringFile(path, { active: id, keys: ring.keys }, false)
}

/**
 * The text and the permission bits of one open file: the mode is that of the bytes read, even
 * when the path is swapped in between (a Kubernetes Secret's symlink, a rotation's rename).
 */
async function readWithMode(path: string): Promise<{ text: string; mode: number }> {
  const fh = await open(path, 'r')
  try {
    const st = await fh.stat()
    return { text: await fh.readFile('utf8'), mode: st.mode }
  } finally {
    await fh.close()
  }
}

/** The local keyring file provider. */
export class LocalKeyring implements KeyProvider {
  readonly path: string
  readonly #create: boolean
  #exposure: KeyExposure | undefined = undefined
  constructor(path: string, opts: { create: boolean }) {
    this.path = path
    this.#create = opts.create
  }
  get description(): string {
    return `local keyring ${this.path}`
  }
  async load(): Promise<KeyringSnapshot> {
    let read: { text: string; mode: number }
    try {
      read = await readWithMode(this.path)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !this.#create) throw new KeyringError(`cannot read DLP keyring ${this.path}: ${(err as Error).message}`)
      ensureKeyringFile(this.path)
      read = await readWithMode(this.path)
    }
    const ring = parseKeyring(read.text, this.path)
    const mode = exposedMode(read.mode)
    this.#exposure = mode === undefined ? undefined : { path: this.path, mode }
    return ring
  }
  exposure(): KeyExposure | undefined {
    return this.#exposure
  }
  async version(): Promise<string> {
    const s = await stat(this.path)
    // The inode too: promoteKey rewrites the file at the same size, and on a filesystem with
    // coarse timestamps (1 s, or a restore that keeps mtimes) mtime and size alone did not move,
    // so a promotion went unnoticed. addKey/promoteKey (and a Secret's symlink swap) replace the
    // file, which gives it a new inode.
    return `${s.ino}:${s.mtimeMs}:${s.size}`
  }
}
