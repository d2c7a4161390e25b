// The config store: the versioned document (source of truth), its relational projections (tenant
// identities, the seed's api_quotas), and the audit entry of every change, all written in one
// transaction. Design: we store the whole document per version and patch it per resource write,
// rather than assembling it from per-resource tables — the schema grows with every filter, and a
// resource is then only a path into the document, validated as a whole by the proxy's own schema.
import { randomUUID, type KeyObject } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { ConfigError, validateConfig } from '../config/load.ts'
import { appendAudit, AUDIT_KEY_OVERLAP_ENTRIES, currentRequestId, type AuditEntry, type AuditInput } from './audit.ts'
import { canonicalJson, sha256Hex } from '../config/canonical-json.ts'
import { inexact } from '../config/json-numbers.ts'
import { DatabaseUnavailable, num, type Db, type Tx } from './db.ts'
import { HttpError } from './http-kit.ts'
import { migrate } from './migrations.ts'
import { readQuotaLimits, QUOTA_KINDS, type QuotaKind } from './quota-section.ts'
import type { Doc } from './resources.ts'
import { openSnapshot, signSnapshot, type SignedSnapshot } from './snapshot.ts'
import { verifySignature, type SigningKey } from './signing.ts'

export interface Head {
  version: number
  document: Doc
  digest: string
  envelope: SignedSnapshot
  createdAt: number
  author: string
}

export const CONFIG_CHANNEL = 'igw_config_version'

export class ValidationFailed extends Error {
  readonly problems: string[]
  constructor(problems: string[]) {
    super(`invalid config document:\n  ${problems.join('\n  ')}`)
    this.problems = problems
  }
}

export class PreconditionFailed extends Error {
  readonly current: string | undefined
  constructor(message: string, current: string | undefined) {
    super(message)
    this.current = current
  }
}

export class NotFound extends Error {}

export interface CommitRequest<R> {
  actor: string
  action: string
  /** Audit resource name, e.g. "tenants/acme". */
  resource: string
  /**
   * Computes the next document from the head. Throws PreconditionFailed/NotFound to abort.
   * Returns the new document and the resource's before/after (for the audit diff) and a result.
   */
  change: (head: Head) => { document: Doc; before: unknown; after: unknown; result: R; detail?: Record<string, unknown> }
  /** The admin request making the change, for its audit entry; default: the request running now. */
  requestId?: string
}

export interface CommitResult<R> {
  version: number
  result: R
  /** false when the change left the document identical (no new version, no audit entry). */
  changed: boolean
  /**
   * Tenant name → stable UUID as of this commit, read inside its transaction: what a write's answer
   * shows is never read after the commit, where a failed read answered 503 "try again" for a
   * change that had been made.
   */
  tenantIds: ReadonlyMap<string, string>
}

/**
 * "__proto__" as a key anywhere in the document: JSON.parse keeps it as a key, but assignment
 * (and so the zod schema, and every proxy that loads the document) treats it as the prototype and
 * drops it — what was stored would not be what runs. Likewise a number JSON.parse did not keep as
 * written (config/json-numbers.ts): 1e400 is Infinity, stored as null; 9007199254740993 is stored
 * as …992. The schema's own number fields refuse both, but free-form values (a subscription
 * topic's `variables`) took them, and proxies then subscribed with another value than the one
 * sent. Such a number already in `previous` at the same path (a version stored before this check)
 * is left alone, so a write elsewhere is not refused for it. Iterative: documents come from clients.
 */
function unstorableValueProblems(doc: unknown, previous: unknown, max = 20): string[] {
  const out: string[] = []
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
  const stack: [unknown, unknown, string][] = [[doc, previous, '']]
  while (stack.length > 0 && out.length < max) {
    const [v, was, path] = stack.pop()!
    if (typeof v === 'number') {
      if (inexact(v) && !Object.is(v, was)) {
        out.push(`${path || '(root)'}: ${Number.isFinite(v) ? 'an integer beyond ±9007199254740991' : 'a number beyond the range of a double'} is not kept exactly (write it as a string)`)
      }
      continue
    }
    if (v === null || typeof v !== 'object') continue
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], Array.isArray(was) ? was[i] : undefined, `${path}[${i}]`])
      continue
    }
    for (const k of Object.keys(v).reverse()) {
      const p = path ? `${path}.${k}` : k
      if (k === '__proto__') out.push(`${p}: "__proto__" is not allowed as a key`)
      else stack.push([(v as Record<string, unknown>)[k], isObj(was) && Object.hasOwn(was, k) ? was[k] : undefined, p])
    }
  }
  return out
}

/**
 * Validate a whole document with the proxy's schema; throws ValidationFailed with path-named
 * problems. `previous`: the document it replaces, whose values are not refused again.
 */
export function validateDocument(doc: unknown, previous?: unknown): void {
  const reserved = unstorableValueProblems(doc, previous)
  if (reserved.length > 0) throw new ValidationFailed(reserved)
  try {
    validateConfig(doc, 'document')
  } catch (err) {
    if (err instanceof ConfigError) throw new ValidationFailed(err.problems)
    throw err
  }
}

/**
 * The largest document (canonical JSON, UTF-8) a commit may leave. Each request body is capped at
 * 4 MiB, but item after item the document grew without bound — and every version stores it twice
 * (as written and inside its signed envelope), every proxy parses it whole on every push.
 */
export const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

/**
 * 413 for a document over the bound — unless it is no larger than the head (one stored before the
 * bound, or by a larger one): writes that shrink it, or keep its size, must still go through.
 */
function checkDocumentSize(json: string, headJson: string): void {
  if (json.length <= MAX_DOCUMENT_BYTES / 3) return // at most 3 UTF-8 bytes per UTF-16 unit
  const bytes = Buffer.byteLength(json)
  if (bytes <= MAX_DOCUMENT_BYTES || bytes <= Buffer.byteLength(headJson)) return
  throw new HttpError(413, `the config document would be ${bytes} bytes, over the limit of ${MAX_DOCUMENT_BYTES} bytes (16 MiB, canonical JSON); nothing was changed`, {
    problems: [`(root): the document would be ${bytes} bytes; at most ${MAX_DOCUMENT_BYTES} (remove something first)`],
  })
}

/** Tenant name → stable UUID (rows are only ever added). */
async function readTenantIds(tx: Tx): Promise<Map<string, string>> {
  return new Map((await tx.query<{ id: string; name: string }>('SELECT id, name FROM tenants')).map((r) => [r.name, r.id]))
}

interface VersionRow {
  version: unknown
  document: string
  digest: string
  envelope: string
  author: string
  created_at: unknown
}

function toHead(r: VersionRow): Head {
  return {
    version: num(r.version),
    document: JSON.parse(r.document) as Doc,
    digest: r.digest,
    envelope: JSON.parse(r.envelope) as SignedSnapshot,
    createdAt: num(r.created_at),
    author: r.author,
  }
}

/**
 * Events: `version` when the head moves forward (a commit here or, after refresh(), elsewhere);
 * `rewound` when refresh() finds the database's head behind the one held, or another document
 * under the same number (the database was restored from an older backup, or failed over to a
 * replica that had not received the last commits, while this instance ran); `committed` for a
 * version this instance committed; `audited` for every audit entry it appended.
 */
export class ConfigStore extends EventEmitter<{ version: [Head]; rewound: [head: Head, previous: Head]; committed: [Head]; audited: [action: string] }> {
  readonly db: Db
  readonly key: SigningKey
  #head: Head | undefined
  /** Bumped whenever #head changes: a refresh whose read began before a change must not undo it. */
  #headSeq = 0
  /** The refresh reading now, and the one queued to run after it. */
  #refreshing: Promise<void> | undefined
  #refreshQueued: Promise<void> | undefined

  constructor(db: Db, key: SigningKey) {
    super()
    this.db = db
    this.key = key
  }

  /** init() committed its seed (false: none given, or the store already held a version). */
  get seeded(): boolean {
    return this.#seeded
  }
  #seeded = false

  /** Migrate, then seed version 1 from `seed` when the store is empty. */
  async init(seed?: Doc): Promise<void> {
    await migrate(this.db)
    this.#head = await this.#readHead(this.db)
    this.#headSeq++
    if (this.#head === undefined && seed !== undefined) {
      // Decided again under the write lock: another instance starting on the same empty database
      // may have seeded it meanwhile, and an admin committed over that — our seed on top would
      // undo their change (a version that is nobody's edit). Then the head stays as it is.
      const { changed } = await this.commit({
        actor: 'system',
        action: 'config.seed',
        resource: 'config',
        change: (head) => (head.version > 0 ? { document: head.document, before: head.document, after: head.document, result: undefined } : { document: seed, before: undefined, after: seed, result: undefined }),
      })
      this.#seeded = changed
    }
  }

  /**
   * After the signing key was replaced (restarted with another --signing-key): the head is still
   * signed with the old key, and proxies pinned to the new one refused it — a proxy starting then
   * had no config until the next commit. The head's exact payload is signed again with this key,
   * but only once it verifies with one of `previousKeys` (the keys this one replaced) and is this
   * row's version and document: a row edited in the database is never blessed with the new key.
   * Audited (`config.resign`). Returns what was found: nothing to do (undefined), re-signed, or
   * signed by a key not among `previousKeys` (left as it is).
   */
  async resignHead(previousKeys: readonly KeyObject[]): Promise<{ version: number; keyId: string; resigned: boolean } | undefined> {
    const out = await this.db.transaction(async (tx) => {
      const head = await this.#readHead(tx)
      if (head === undefined || verifySignature(this.key.publicKey, head.envelope.payload, head.envelope.signature)) return undefined
      const keyId = typeof head.envelope.keyId === 'string' ? head.envelope.keyId : ''
      const signer = previousKeys.find((k) => {
        try {
          const p = openSnapshot(head.envelope, k)
          return p.version === head.version && p.digest === head.digest
        } catch {
          return false
        }
      })
      if (signer === undefined) return { head, keyId, resigned: false }
      const envelope: SignedSnapshot = { payload: head.envelope.payload, keyId: this.key.keyId, signature: this.key.sign(head.envelope.payload) }
      await tx.query('UPDATE config_versions SET envelope = $2 WHERE version = $1', [head.version, JSON.stringify(envelope)])
      await appendAudit(tx, this.key, { actor: 'system', action: 'config.resign', resource: 'config', before: { keyId }, after: { keyId: this.key.keyId }, configVersion: head.version })
      return { head: { ...head, envelope }, keyId, resigned: true }
    })
    if (out === undefined) return undefined
    if (out.resigned) {
      // Same version and document: nothing to push (proxies running it keep it); new streams get this envelope.
      if (this.#head?.version === out.head.version) this.#setHead(out.head)
      this.emit('audited', 'config.resign')
    }
    return { version: out.head.version, keyId: out.keyId, resigned: out.resigned }
  }

  /**
   * After a signing-key change the new key's period in the audit chain began only with its first
   * entry, and until one was written (`config.resign` needs --previous-keys and a head the old key
   * signed) whoever held the old key could re-sign the whole tail from inside the old key's period:
   * the new key never appeared in the chain, and verifyAudit could not tell. At start, when the
   * newest entry is not this key's, `audit.key_rotated` (the two key ids, nothing secret) signed by
   * this key starts its period at once. Decided under the write lock, so a replica on this key that
   * already wrote it — or, in a rolling restart, signed any entry within the overlap the old key
   * still has — adds nothing. Returns the key id of the entry it followed, when it wrote one.
   */
  async markSigningKey(): Promise<{ previousKeyId: string; seq: number } | undefined> {
    const out = await this.db.transaction(async (tx) => {
      // Newest first; key_id is not hashed (anyone may write it), so only a signature that verifies counts.
      const recent = await tx.query<{ seq: unknown; key_id: string; hash: string; signature: string }>(
        'SELECT seq, key_id, hash, signature FROM audit_log WHERE seq > (SELECT MAX(seq) FROM audit_log) - $1 ORDER BY seq DESC',
        [AUDIT_KEY_OVERLAP_ENTRIES],
      )
      if (recent.length === 0 || recent.some((r) => r.key_id === this.key.keyId && verifySignature(this.key.publicKey, r.hash, r.signature))) return undefined
      const previousKeyId = recent[0]!.key_id
      const entry = await appendAudit(tx, this.key, { actor: 'system', action: 'audit.key_rotated', resource: 'audit', before: { keyId: previousKeyId }, after: { keyId: this.key.keyId } })
      return { previousKeyId, seq: entry.seq }
    })
    if (out !== undefined) this.emit('audited', 'audit.key_rotated')
    return out
  }

  async #readHead(tx: Tx): Promise<Head | undefined> {
    const rows = await tx.query<VersionRow>('SELECT * FROM config_versions ORDER BY version DESC LIMIT 1')
    return rows.length ? toHead(rows[0]!) : undefined
  }

  head(): Head | undefined {
    return this.#head
  }

  /**
   * Re-read the head (another instance committed); emits 'version' when it moved forward. A head
   * that went BACK (or holds another document under the same number: the database restored or
   * failed over underneath this instance) replaces the one held too, with 'rewound': the cached
   * head used to win forever — GET /v1/config served a version the database no longer had, and
   * the commits made after it (numbered from the database's head, so not above the cached one)
   * were never pushed, until a restart.
   */
  refresh(): Promise<void> {
    // One read at a time, and at most one more queued behind it for every call made meanwhile: a
    // burst of commits on another instance arrives here as a burst of NOTIFYs, and each used to
    // read (and parse) the whole head row at once — fifty commits of a 4 MB document, fifty
    // copies of it in memory. The queued read starts after the calls it stands for were made.
    if (this.#refreshing === undefined) {
      this.#refreshing = this.#refreshOnce().finally(() => (this.#refreshing = undefined))
      return this.#refreshing
    }
    const next = () => {
      this.#refreshQueued = undefined
      return this.refresh()
    }
    this.#refreshQueued ??= this.#refreshing.then(next, next)
    return this.#refreshQueued
  }

  async #refreshOnce(): Promise<void> {
    const seq = this.#headSeq
    // Every 5 s (and at every NOTIFY): the head's number and digest first, the document only when
    // they moved. The whole row is the document twice (as stored and inside the signed envelope):
    // for a document of a few MB that was megabytes read and parsed on every poll with nothing
    // new, blocking the event loop (SQLite reads synchronously) and every request with it.
    const held0 = this.#head
    if (held0 !== undefined) {
      const top = await this.db.query<{ version: unknown; digest: string }>('SELECT version, digest FROM config_versions ORDER BY version DESC LIMIT 1')
      if (top.length === 0 || (num(top[0]!.version) === held0.version && top[0]!.digest === held0.digest)) return
    }
    const h = await this.#readHead(this.db)
    if (h === undefined) return
    const held = this.#head
    if (held === undefined || h.version > held.version) {
      this.#setHead(h)
      this.emit('version', h)
    } else if (seq === this.#headSeq && (h.version < held.version || h.digest !== held.digest)) {
      // Only when nothing changed the head while this read was on its way (a commit here read
      // before it landed would look like a step back).
      this.#setHead(h)
      this.emit('rewound', h, held)
    }
  }

  #setHead(h: Head): void {
    this.#head = h
    this.#headSeq++
  }

  async version(v: number): Promise<Head | undefined> {
    const rows = await this.db.query<VersionRow>('SELECT * FROM config_versions WHERE version = $1', [v])
    return rows.length ? toHead(rows[0]!) : undefined
  }

  /** Versions newest first; with `before`, only those older than it (the next page of a listing). */
  async versions(limit = 50, before?: number): Promise<{ version: number; digest: string; author: string; summary: string; createdAt: number }[]> {
    const rows = await this.db.query<{ version: unknown; digest: string; author: string; summary: string; created_at: unknown }>(
      before === undefined
        ? 'SELECT version, digest, author, summary, created_at FROM config_versions ORDER BY version DESC LIMIT $1'
        : 'SELECT version, digest, author, summary, created_at FROM config_versions WHERE version < $2 ORDER BY version DESC LIMIT $1',
      before === undefined ? [limit] : [limit, before],
    )
    return rows.map((r) => ({ version: num(r.version), digest: r.digest, author: r.author, summary: r.summary, createdAt: num(r.created_at) }))
  }

  async commit<R>(req: CommitRequest<R>): Promise<CommitResult<R>> {
    // Read here, in the caller's context: the transaction may run from a queue.
    const requestId = req.requestId ?? currentRequestId()
    const out = await this.db.transaction(async (tx) => {
      // Read the head inside the write lock: the cache could be stale if another writer committed.
      const head = (await this.#readHead(tx)) ?? { version: 0, document: {}, digest: '', envelope: { payload: '', keyId: '', signature: '' }, createdAt: 0, author: '' }
      const { document, before, after, result, detail } = req.change(head)
      const json = canonicalJson(document)
      const headJson = head.version > 0 ? canonicalJson(head.document) : ''
      if (head.version > 0 && json === headJson) return { head, result, changed: false, tenantIds: await readTenantIds(tx) }
      checkDocumentSize(json, headJson)
      validateDocument(document, head.version > 0 ? head.document : undefined)
      const version = head.version + 1
      const now = Date.now()
      const envelope = signSnapshot(this.key, version, json, new Date(now))
      const digest = sha256Hex(json)
      await tx.query('INSERT INTO config_versions (version, document, digest, envelope, author, summary, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
        version,
        json,
        digest,
        JSON.stringify(envelope),
        req.actor,
        `${req.action} ${req.resource}`,
        now,
      ])
      const tenantIds = await this.#project(tx, document)
      await appendAudit(tx, this.key, { actor: req.actor, action: req.action, resource: req.resource, before, after, configVersion: version, requestId, detail }, now)
      // Other control plane instances on the same PostgreSQL push it to their proxies too
      // (delivered at commit; never if this transaction rolls back).
      if (this.db.kind === 'postgres') await tx.query('SELECT pg_notify($1, $2)', [CONFIG_CHANNEL, String(version)])
      const next: Head = { version, document: JSON.parse(json) as Doc, digest, envelope, createdAt: now, author: req.actor }
      return { head: next, result, changed: true, tenantIds }
    })
    if (out.changed) {
      this.emit('committed', out.head)
      this.emit('audited', req.action)
    }
    // Unchanged, the head read under the lock may still be newer than the one held (another
    // instance committed it; or seeded the store this one found empty at its start, which left
    // this one with no head — 503s, and proxies told there is no config — until the next poll).
    if (out.head.version > (this.#head?.version ?? 0)) {
      this.#setHead(out.head)
      this.emit('version', out.head)
    }
    return { version: out.head.version, result: out.result, changed: out.changed, tenantIds: out.tenantIds }
  }

  /**
   * Append an audit entry that is not a config change (a detokenization, a plugin upload or its
   * refusal), after `within` in the same transaction when given: both commit or neither does.
   */
  async audit(input: AuditInput, within?: (tx: Tx) => Promise<void>): Promise<AuditEntry> {
    const requestId = input.requestId ?? currentRequestId()
    const entry = await this.db.transaction(async (tx) => {
      await within?.(tx)
      return appendAudit(tx, this.key, { ...input, requestId })
    })
    this.emit('audited', input.action)
    return entry
  }

  /** Keep tenant identities and the seed's api_quotas in step with the document; returns every tenant's id. */
  async #project(tx: Tx, doc: Doc): Promise<Map<string, string>> {
    const tenants = Object.keys((doc.tenants as Record<string, unknown> | undefined) ?? {})
    const known = await readTenantIds(tx)
    for (const name of tenants) {
      if (!known.has(name)) {
        const id = randomUUID()
        await tx.query('INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)', [id, name, Date.now()])
        known.set(name, id)
      }
    }
    await tx.query('DELETE FROM api_quotas')
    for (const q of readQuotaLimits(doc)) {
      const id = known.get(q.tenant)
      if (id === undefined) continue // a quota for a tenant the document does not list is rejected by validation
      await tx.query('INSERT INTO api_quotas (tenant_id, kind, limit_per_day) VALUES ($1, $2, $3)', [id, q.kind, q.limitPerDay])
    }
    return known
  }

  /** The last tenant ids read, and the head version they were read at. */
  #tenantIds: { version: number; ids: Map<string, string> } | undefined

  /**
   * Tenant name → id. The tenants table changes only in commits, so a read at the same head
   * version is the one before. While the database is unavailable the last read is served: tenant
   * listings read the head document, kept in memory, and answered 503 for these ids alone (a
   * tenant created since has none until the database answers again).
   */
  async tenantIds(): Promise<Map<string, string>> {
    const version = this.#head?.version ?? 0
    const last = this.#tenantIds
    if (last !== undefined && last.version === version) return last.ids
    try {
      const ids = new Map((await this.db.query<{ id: string; name: string }>('SELECT id, name FROM tenants')).map((r) => [r.name, r.id]))
      this.#tenantIds = { version, ids }
      return ids
    } catch (err) {
      if (last !== undefined && err instanceof DatabaseUnavailable) return last.ids
      throw err
    }
  }

  /** The api_quotas rows joined to tenant names (what SQL consumers of the seed table see). */
  async quotaRows(): Promise<{ tenant: string; tenantId: string; kind: QuotaKind; limitPerDay: number }[]> {
    const rows = await this.db.query<{ name: string; tenant_id: string; kind: string; limit_per_day: unknown }>(
      'SELECT t.name, q.tenant_id, q.kind, q.limit_per_day FROM api_quotas q JOIN tenants t ON t.id = q.tenant_id ORDER BY t.name, q.kind',
    )
    return rows.filter((r) => (QUOTA_KINDS as readonly string[]).includes(r.kind)).map((r) => ({ tenant: r.name, tenantId: r.tenant_id, kind: r.kind as QuotaKind, limitPerDay: num(r.limit_per_day) }))
  }
}
