// Accepted plugin packages in the `plugins` table (migration 2), on SQLite and PostgreSQL alike.
// Only packages whose signature verified get here; nothing loads or runs them yet (sandboxed
// execution in the proxies is a later step), the control plane only keeps and lists them.
import { num, type Db, type Tx } from './db.ts'
import type { VerifiedPlugin } from './plugin-package.ts'

export interface PluginView {
  name: string
  version: string
  publisher: string
  description: string | null
  keyId: string
  /** "sha256:<hex>" of the artifact bytes. */
  digest: string
  size: number
  signature: string
  uploadedBy: string
  uploadedAt: string
}

export class PluginExists extends Error {
  readonly digest: string
  constructor(name: string, version: string, digest: string, asked = version) {
    super(
      asked === version
        ? `plugin ${name}@${version} already exists (sha256:${digest}); versions are immutable: publish a new version`
        : `plugin ${name}@${asked} is version ${withoutBuild(asked)}, which exists as ${name}@${version} (sha256:${digest}); build metadata does not make a new version (SemVer §10) and versions are immutable: publish a new version`,
    )
    this.digest = digest
  }
}

/** The name is published by another publisher: a name belongs to the publisher who first published it. */
export class PluginNameTaken extends Error {
  readonly owner: string
  constructor(name: string, owner: string, publisher: string) {
    super(`plugin ${name} is published by "${owner}"; "${publisher}" cannot publish versions of it (a plugin name belongs to the publisher who first published it: choose another name)`)
    this.owner = owner
  }
}

/** A version without its build metadata (`1.0.0+b2` → `1.0.0`): SemVer §10 gives both the same precedence. */
function withoutBuild(version: string): string {
  const plus = version.indexOf('+')
  return plus === -1 ? version : version.slice(0, plus)
}

interface PluginRow {
  name: string
  version: string
  publisher: string
  description: string | null
  key_id: string
  digest: string
  size: unknown
  signature: string
  uploaded_by: string
  uploaded_at: unknown
}

const COLUMNS = 'name, version, publisher, description, key_id, digest, size, signature, uploaded_by, uploaded_at'

function toView(r: PluginRow): PluginView {
  return {
    name: r.name,
    version: r.version,
    publisher: r.publisher,
    description: r.description ?? null,
    keyId: r.key_id,
    digest: `sha256:${r.digest}`,
    size: num(r.size),
    signature: r.signature,
    uploadedBy: r.uploaded_by,
    uploadedAt: new Date(num(r.uploaded_at)).toISOString(),
  }
}

/**
 * Insert inside the caller's transaction (writes serialize, so the checks hold). Throws
 * PluginNameTaken when another publisher already publishes this name (its trusted key would
 * otherwise let it add "newer" versions of someone else's plugin, or take the next version number
 * first, which immutability would then keep from its owner), and PluginExists when the version is
 * stored — also as `1.0.0+other-build`, which SemVer ranks the same as `1.0.0` (npm refuses it too).
 */
export async function insertPlugin(tx: Tx, p: VerifiedPlugin, uploadedBy: string, now: number): Promise<PluginView> {
  const stored = await tx.query<{ version: string; publisher: string; digest: string }>('SELECT version, publisher, digest FROM plugins WHERE name = $1 ORDER BY uploaded_at, version', [p.name])
  const owner = stored[0]?.publisher
  if (owner !== undefined && owner !== p.publisher) throw new PluginNameTaken(p.name, owner, p.publisher)
  const same = stored.find((r) => r.version === p.version) ?? stored.find((r) => withoutBuild(r.version) === withoutBuild(p.version))
  if (same !== undefined) throw new PluginExists(p.name, same.version, same.digest, p.version)
  await tx.query(`INSERT INTO plugins (${COLUMNS}, artifact) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, [
    p.name,
    p.version,
    p.publisher,
    p.description ?? null,
    p.keyId,
    p.digest,
    p.size,
    p.signature,
    uploadedBy,
    now,
    p.artifact,
  ])
  return toView({ name: p.name, version: p.version, publisher: p.publisher, description: p.description ?? null, key_id: p.keyId, digest: p.digest, size: p.size, signature: p.signature, uploaded_by: uploadedBy, uploaded_at: now })
}

/** Where a page of GET /v1/plugins ends: the sort key of its last plugin (name, upload time, version). */
export interface PluginCursor {
  name: string
  uploadedAt: number
  version: string
}

/**
 * Plugins in a stable order — by name, then upload order, then version ((name, version) is the
 * primary key, so no two rows share a sort key) — at most `limit` of them, after `after` when given
 * (keyset paging: a plugin uploaded between two pages is neither skipped nor repeated in the rest).
 */
export async function listPlugins(db: Db, opts: { name?: string; publisher?: string; limit?: number; after?: PluginCursor } = {}): Promise<PluginView[]> {
  const where: string[] = []
  const params: (string | number)[] = []
  if (opts.name !== undefined) where.push(`name = $${params.push(opts.name)}`)
  if (opts.publisher !== undefined) where.push(`publisher = $${params.push(opts.publisher)}`)
  if (opts.after !== undefined) {
    const n = `$${params.push(opts.after.name)}`
    const at = `$${params.push(opts.after.uploadedAt)}`
    const v = `$${params.push(opts.after.version)}`
    where.push(`(name > ${n} OR (name = ${n} AND (uploaded_at > ${at} OR (uploaded_at = ${at} AND version > ${v}))))`)
  }
  const limit = opts.limit === undefined ? '' : ` LIMIT $${params.push(opts.limit)}`
  const rows = await db.query<PluginRow>(`SELECT ${COLUMNS} FROM plugins${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY name, uploaded_at, version${limit}`, params)
  return rows.map(toView)
}

/** The stored artifact (base64, as uploaded), for tests and a future download endpoint. */
export async function pluginArtifact(db: Db, name: string, version: string): Promise<string | undefined> {
  const rows = await db.query<{ artifact: string }>('SELECT artifact FROM plugins WHERE name = $1 AND version = $2', [name, version])
  return rows[0]?.artifact
}
