// The audit log: every admin change appends one entry (who, what, before/after, diff, when) to a
// hash chain — each entry's hash covers the previous hash and the entry's canonical JSON — and
// each hash is signed with the control plane's ed25519 key. Editing, deleting or reordering a row
// breaks the chain at that row; re-hashing the rest needs the private key, which the database
// does not hold.
import type { KeyObject } from 'node:crypto'
import { canonicalJson, jsonDiff, sha256Hex, type Change } from '../config/canonical-json.ts'
import { num, type Db, type SqlValue, type Tx } from './db.ts'
import { verifySignature, type SigningKey } from './signing.ts'

export const GENESIS_HASH = '0'.repeat(64)

export interface AuditInput {
  actor: string
  action: string
  resource: string
  before?: unknown
  after?: unknown
  configVersion?: number | undefined
}

export interface AuditEntry {
  seq: number
  at: number
  actor: string
  action: string
  resource: string
  before: unknown
  after: unknown
  diff: Change[]
  configVersion: number | null
  prevHash: string
  hash: string
  keyId: string
  signature: string
}

interface AuditRow {
  seq: unknown
  at: unknown
  actor: string
  action: string
  resource: string
  before_json: string | null
  after_json: string | null
  diff: string
  config_version: unknown
  prev_hash: string
  hash: string
  key_id: string
  signature: string
}

/** What the hash covers: every stored field except the hash and signature themselves. */
function hashedFields(r: AuditRow): string {
  return canonicalJson({
    seq: num(r.seq),
    at: num(r.at),
    actor: r.actor,
    action: r.action,
    resource: r.resource,
    before: r.before_json,
    after: r.after_json,
    diff: r.diff,
    configVersion: r.config_version === null ? null : num(r.config_version),
  })
}

export function entryHash(prevHash: string, r: AuditRow): string {
  return sha256Hex(`${prevHash}\n${hashedFields(r)}`)
}

/** Append inside the caller's transaction (so the change and its audit entry commit together). */
export async function appendAudit(tx: Tx, key: SigningKey, input: AuditInput, now = Date.now()): Promise<AuditEntry> {
  const last = await tx.query<{ seq: unknown; hash: string }>('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1')
  const seq = last.length ? num(last[0]!.seq) + 1 : 1
  const prevHash = last.length ? last[0]!.hash : GENESIS_HASH
  const diff = jsonDiff(input.before, input.after)
  const row: AuditRow = {
    seq,
    at: now,
    actor: input.actor,
    action: input.action,
    resource: input.resource,
    before_json: input.before === undefined ? null : canonicalJson(input.before),
    after_json: input.after === undefined ? null : canonicalJson(input.after),
    diff: canonicalJson(diff),
    config_version: input.configVersion ?? null,
    prev_hash: prevHash,
    hash: '',
    key_id: key.keyId,
    signature: '',
  }
  row.hash = entryHash(prevHash, row)
  row.signature = key.sign(row.hash)
  await tx.query(
    'INSERT INTO audit_log (seq, at, actor, action, resource, before_json, after_json, diff, config_version, prev_hash, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)',
    [seq, now, row.actor, row.action, row.resource, row.before_json, row.after_json, row.diff, row.config_version as number | null, prevHash, row.hash, row.key_id, row.signature],
  )
  return toEntry(row)
}

function toEntry(r: AuditRow): AuditEntry {
  return {
    seq: num(r.seq),
    at: num(r.at),
    actor: r.actor,
    action: r.action,
    resource: r.resource,
    before: r.before_json === null ? null : (JSON.parse(r.before_json) as unknown),
    after: r.after_json === null ? null : (JSON.parse(r.after_json) as unknown),
    diff: JSON.parse(r.diff) as Change[],
    configVersion: r.config_version === null ? null : num(r.config_version),
    prevHash: r.prev_hash,
    hash: r.hash,
    keyId: r.key_id,
    signature: r.signature,
  }
}

export async function listAudit(db: Db, opts: { afterSeq?: number; limit?: number; resource?: string } = {}): Promise<AuditEntry[]> {
  const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1000)
  const rows = opts.resource
    ? await db.query<AuditRow>('SELECT * FROM audit_log WHERE seq > $1 AND resource = $2 ORDER BY seq LIMIT $3', [opts.afterSeq ?? 0, opts.resource, limit])
    : await db.query<AuditRow>('SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2', [opts.afterSeq ?? 0, limit])
  return rows.map(toEntry)
}

export interface VerifyProblem {
  seq: number
  problem: string
}

export interface VerifyResult {
  ok: boolean
  entries: number
  headHash: string
  problems: VerifyProblem[]
}

/** Rows verifyAudit reads per query: memory stays bounded by this, not by the length of the log. */
export const AUDIT_VERIFY_PAGE_ROWS = 1000

/**
 * Walk the whole chain. Reports every broken row (not only the first), each named by its seq:
 * a changed row fails its own hash; a deleted or inserted row breaks the link of the next one.
 *
 * The log is read in pages of `pageRows` in seq order (keyset: `seq > last seq seen`, the primary
 * key's index), so a log of millions of entries is never held in memory at once; the checks carry
 * only the previous hash and seq from one page to the next, so the verdict is the one a single
 * read would give. Pages are separate statements, not one snapshot: an entry appended while the
 * walk runs is verified too (it links to the head the walk reached).
 */
export async function verifyAudit(db: Db, publicKey: KeyObject, opts: { pageRows?: number } = {}): Promise<VerifyResult> {
  const pageRows = Math.max(1, Math.floor(opts.pageRows ?? AUDIT_VERIFY_PAGE_ROWS))
  const problems: VerifyProblem[] = []
  let prev = GENESIS_HASH
  let expectSeq = 1
  let entries = 0
  // The last seq as the driver returned it (pg: a string), so the next page's bound is exact.
  let after: SqlValue | undefined
  for (;;) {
    // The first page has no lower bound: a row with seq 0 or below (inserted by hand) is reported as before.
    const rows =
      after === undefined
        ? await db.query<AuditRow>('SELECT * FROM audit_log ORDER BY seq LIMIT $1', [pageRows])
        : await db.query<AuditRow>('SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2', [after, pageRows])
    for (const r of rows) {
      const seq = num(r.seq)
      if (seq !== expectSeq) problems.push({ seq, problem: `sequence gap: expected seq ${expectSeq} (entries missing or renumbered)` })
      if (r.prev_hash !== prev) problems.push({ seq, problem: 'prev_hash does not link to the entry before it (an entry was removed, inserted or re-hashed)' })
      const h = entryHash(r.prev_hash, r)
      if (h !== r.hash) problems.push({ seq, problem: `content does not match its hash (the row was edited: ${describeEdit(r)})` })
      if (!verifySignature(publicKey, r.hash, r.signature)) problems.push({ seq, problem: 'signature does not verify with the control plane key' })
      prev = r.hash
      expectSeq = seq + 1
    }
    entries += rows.length
    if (rows.length < pageRows) break
    after = rows[rows.length - 1]!.seq as SqlValue
    // A page's signatures take tens of milliseconds: let the API's other requests run between pages.
    await new Promise((resolve) => setImmediate(resolve))
  }
  return { ok: problems.length === 0, entries, headHash: prev, problems }
}

function describeEdit(r: AuditRow): string {
  return `actor=${JSON.stringify(r.actor)} action=${r.action} resource=${r.resource}`
}
