// The audit log: every admin change appends one entry (who, what, before/after, diff, when) to a
// hash chain — each entry's hash covers the previous hash and the entry's canonical JSON — and
// each hash is signed with the control plane's ed25519 key. Editing, deleting or reordering a row
// breaks the chain at that row; re-hashing the rest needs the private key, which the database
// does not hold.
import { AsyncLocalStorage } from 'node:async_hooks'
import type { KeyObject } from 'node:crypto'
import { canonicalJson, jsonDiff, sha256Hex, type Change } from '../config/canonical-json.ts'
import { num, type Db, type SqlValue, type Tx } from './db.ts'
import { keyIdOf, verifySignature, type SigningKey } from './signing.ts'

export const GENESIS_HASH = '0'.repeat(64)

/**
 * The id of the admin request being handled (the `x-request-id` it is answered with), for the
 * audit entries it appends: server.ts runs each request inside it, so every write path (REST,
 * GraphQL, plugin uploads, detokenize) records it without passing it through each call.
 */
export const auditRequestScope = new AsyncLocalStorage<string>()

/** The request id of the admin request running now, if any (read at the entry of a write, in the caller's context). */
export function currentRequestId(): string | undefined {
  return auditRequestScope.getStore()
}

export interface AuditInput {
  actor: string
  action: string
  resource: string
  before?: unknown
  after?: unknown
  configVersion?: number | undefined
  /** The admin request that made the change (its x-request-id); default: the request running now. */
  requestId?: string | undefined
  /** What the action needs said beyond before/after (a rollback: the version restored and the one it replaced). */
  detail?: Record<string, unknown> | undefined
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
  /** The x-request-id of the admin request that made the change (null: none, e.g. the seed, or an entry written before it was recorded). */
  requestId: string | null
  detail?: Record<string, unknown>
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
  /** Absent (undefined) in rows read before migration 4 by a test's own SELECT; NULL in older entries. */
  request_id?: string | null
  detail?: string | null
  prev_hash: string
  hash: string
  key_id: string
  signature: string
}

/**
 * What the hash covers: every stored field except the hash and signature themselves. The request
 * id and detail (migration 4) are covered when set and left out when NULL, so every entry written
 * before them hashes exactly as it did (and still verifies), while setting, changing or clearing
 * either on a newer entry breaks its hash.
 */
function hashedFields(r: AuditRow): string {
  return canonicalJson({
    ...(r.request_id === null || r.request_id === undefined ? {} : { requestId: r.request_id }),
    ...(r.detail === null || r.detail === undefined ? {} : { detail: r.detail }),
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
    // Hash what the database will give back: a lone UTF-16 surrogate (a JWT `sub` or a GraphQL id
    // may carry one as a JSON escape) is stored as U+FFFD by both engines, so hashing the string
    // as it came made an untouched entry fail verification as "edited". The JSON columns escape it.
    actor: input.actor.toWellFormed(),
    action: input.action.toWellFormed(),
    resource: input.resource.toWellFormed(),
    before_json: input.before === undefined ? null : canonicalJson(input.before),
    after_json: input.after === undefined ? null : canonicalJson(input.after),
    diff: canonicalJson(diff),
    config_version: input.configVersion ?? null,
    request_id: (input.requestId ?? currentRequestId())?.toWellFormed() ?? null,
    detail: input.detail === undefined ? null : canonicalJson(input.detail),
    prev_hash: prevHash,
    hash: '',
    key_id: key.keyId,
    signature: '',
  }
  row.hash = entryHash(prevHash, row)
  row.signature = key.sign(row.hash)
  await tx.query(
    'INSERT INTO audit_log (seq, at, actor, action, resource, before_json, after_json, diff, config_version, request_id, detail, prev_hash, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)',
    [seq, now, row.actor, row.action, row.resource, row.before_json, row.after_json, row.diff, row.config_version as number | null, row.request_id ?? null, row.detail ?? null, prevHash, row.hash, row.key_id, row.signature],
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
    requestId: r.request_id ?? null,
    ...(r.detail === null || r.detail === undefined ? {} : { detail: JSON.parse(r.detail) as Record<string, unknown> }),
    prevHash: r.prev_hash,
    hash: r.hash,
    keyId: r.key_id,
    signature: r.signature,
  }
}

/**
 * Bytes of entry text (before, after, diff) one page of GET /v1/audit holds; the first entry always
 * comes, however large. Entries of a `PUT /v1/config` hold the whole document twice (and the diff
 * of what changed): a page of 100 such entries of a 3 MB document was 600 MB of rows read at once,
 * and the answer died building its text ("Invalid string length", a 500 after half a minute and
 * gigabytes of memory): the log could not be read at all. A page cut here has a `next` like one
 * cut by `limit`.
 */
export const AUDIT_LIST_PAGE_BYTES = 32 * 1024 * 1024

export interface AuditPage {
  entries: AuditEntry[]
  /** Entries within `limit` were left out to keep the page within the byte budget: a next page follows. */
  cut: boolean
}

export async function listAudit(db: Db, opts: { afterSeq?: number; limit?: number; resource?: string; maxBytes?: number } = {}): Promise<AuditPage> {
  // 1001: a page of 1000 and whether another follows (GET /v1/audit).
  const limit = Math.min(Math.max(opts.limit ?? 100, 1), 1001)
  const budget = Math.max(1, Math.floor(opts.maxBytes ?? AUDIT_LIST_PAGE_BYTES))
  // As verifyAudit's pages: sizes from octet_length (the row header, not the text), so only the
  // rows of the page are read whole.
  const rows = await db.query<AuditRow & { fetched: unknown }>(
    `SELECT a.*, w.fetched FROM audit_log a JOIN (
      SELECT seq, size, SUM(size) OVER (ORDER BY seq) AS running, COUNT(*) OVER () AS fetched FROM (
        SELECT seq, COALESCE(octet_length(before_json), 0) + COALESCE(octet_length(after_json), 0) + octet_length(diff) AS size
        FROM audit_log WHERE seq > $1${opts.resource ? ' AND resource = $4' : ''} ORDER BY seq LIMIT $2
      ) s
    ) w ON a.seq = w.seq
    WHERE w.running <= $3 OR w.running = w.size
    ORDER BY a.seq`,
    opts.resource ? [opts.afterSeq ?? 0, limit, budget, opts.resource] : [opts.afterSeq ?? 0, limit, budget],
  )
  return { entries: rows.map(toEntry), cut: rows.length > 0 && rows.length < num(rows[0]!.fetched) }
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
 * Bytes of entry text (before, after, diff) verifyAudit reads per query: a page ends early when
 * its rows hold more. One entry can hold a whole config document twice (a `PUT /v1/config`): 1000
 * such rows of a 10 MB document were 20 GB in one statement, and the walk died out of memory.
 * A single row larger than this is still read, alone.
 */
export const AUDIT_VERIFY_PAGE_BYTES = 32 * 1024 * 1024

/**
 * One page: at most `limit` rows after `seq > $1` (none for the first page), cut where their
 * running byte size passes the budget (the first row always comes). The sizes come from
 * octet_length, which both engines answer from the row header / TOAST pointer without reading
 * the text, so only the rows of the page are read whole. `fetched` is how many rows the limit
 * admitted, so the walk can tell a page cut by bytes from the end of the log.
 */
function pageSql(lowerBound: boolean): string {
  const [limit, budget] = lowerBound ? ['$2', '$3'] : ['$1', '$2']
  return `SELECT a.*, w.fetched FROM audit_log a JOIN (
    SELECT seq, size, SUM(size) OVER (ORDER BY seq) AS running, COUNT(*) OVER () AS fetched FROM (
      SELECT seq, COALESCE(octet_length(before_json), 0) + COALESCE(octet_length(after_json), 0) + octet_length(diff) AS size
      FROM audit_log${lowerBound ? ' WHERE seq > $1' : ''} ORDER BY seq LIMIT ${limit}
    ) s
  ) w ON a.seq = w.seq
  WHERE w.running <= ${budget} OR w.running = w.size
  ORDER BY a.seq`
}
const FIRST_PAGE_SQL = pageSql(false)
const NEXT_PAGE_SQL = pageSql(true)

/**
 * How long a replaced signing key may still sign after the first entry signed by a newer one: a
 * rolling restart has replicas on the old and the new key writing side by side for a while. Both
 * bounds hold at once. The entry bound is the one a forger cannot bend (`at` is chosen by whoever
 * signs; seq is not): re-signing an entry with a retired key means re-signing every entry after
 * it, so only a log whose whole tail lies within these entries of the replacement can be forged.
 */
export const AUDIT_KEY_OVERLAP_ENTRIES = 100
export const AUDIT_KEY_OVERLAP_MS = 5 * 60_000

/** The entry that ended a key's period: the first one signed by a newer key. */
interface Replacement {
  seq: number
  at: number
  keyId: string
}

/**
 * Walk the whole chain. Reports every broken row (not only the first), each named by its seq:
 * a changed row fails its own hash; a deleted or inserted row breaks the link of the next one.
 *
 * With several keys (the first is the current one, the rest those it replaced, in any order),
 * each key signs only during its period: the first entry signed by a key not seen before in the
 * chain ends the period of every key seen so far (the current key ends all others, whenever they
 * appear), and an entry a replaced key signed more than `keyOverlapEntries` entries or
 * `keyOverlapMs` after that is reported. Otherwise whoever holds an old (leaked) private key and
 * the database could re-sign every entry written since the key was replaced.
 *
 * The log is read in pages of `pageRows` in seq order (keyset: `seq > last seq seen`, the primary
 * key's index), and of at most `pageBytes` of entry text, so a log of millions of entries — or of
 * entries holding whole documents — is never held in memory at once; the checks carry only the
 * previous hash and seq from one page to the next, so the verdict is the one a single read would
 * give. Pages are separate statements, not one snapshot: an entry appended while the walk runs is
 * verified too (it links to the head the walk reached).
 */
export async function verifyAudit(
  db: Db,
  publicKey: KeyObject | readonly KeyObject[],
  opts: { pageRows?: number; pageBytes?: number; keyOverlapEntries?: number; keyOverlapMs?: number } = {},
): Promise<VerifyResult> {
  // Several keys: the current one and those it replaced. Each entry is checked with the key its
  // key_id names; an entry naming a key not given is checked with all of them (key_id is not
  // hashed: only the signature counts), and when none verifies the problem names both ids — after
  // a key replacement every older entry said "signature does not verify", as if it were forged.
  const keys = new Map((Array.isArray(publicKey) ? publicKey : [publicKey as KeyObject]).map((k) => [keyIdOf(k), k]))
  const givenIds = [...keys.keys()].join(', ')
  const currentId = keys.keys().next().value
  const overlapEntries = opts.keyOverlapEntries ?? AUDIT_KEY_OVERLAP_ENTRIES
  const overlapMs = opts.keyOverlapMs ?? AUDIT_KEY_OVERLAP_MS
  // Each key that signed so far: undefined while in service, else the entry that replaced it.
  const periods = new Map<string, Replacement | undefined>()
  let currentFirst: Replacement | undefined
  /** Why a key may not sign entry seq (written at `at`), if it may not. */
  const outOfPeriod = (keyId: string, seq: number, at: number): string | undefined => {
    if (!periods.has(keyId)) {
      // First seen after the current key signed: an older key, replaced by the current one.
      if (keyId !== currentId && currentFirst !== undefined) periods.set(keyId, currentFirst)
      else {
        const start = { seq, at, keyId }
        for (const [id, end] of periods) if (end === undefined) periods.set(id, start)
        periods.set(keyId, undefined)
        if (keyId === currentId) currentFirst = start
        return undefined
      }
    }
    const end = periods.get(keyId)
    if (end === undefined || (seq - end.seq <= overlapEntries && at - end.at <= overlapMs)) return undefined
    return `signed by key ${keyId}, which key ${end.keyId} replaced at seq ${end.seq}: a replaced key verifies only within ${overlapEntries} entries and ${overlapMs / 1000} s of its successor's first entry (the entry was signed again with a retired key, or that key was put back in service)`
  }
  const pageRows = Math.max(1, Math.floor(opts.pageRows ?? AUDIT_VERIFY_PAGE_ROWS))
  const pageBytes = Math.max(1, Math.floor(opts.pageBytes ?? AUDIT_VERIFY_PAGE_BYTES))
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
        ? await db.query<AuditRow & { fetched: unknown }>(FIRST_PAGE_SQL, [pageRows, pageBytes])
        : await db.query<AuditRow & { fetched: unknown }>(NEXT_PAGE_SQL, [after, pageRows, pageBytes])
    for (const r of rows) {
      const seq = num(r.seq)
      if (seq !== expectSeq) problems.push({ seq, problem: `sequence gap: expected seq ${expectSeq} (entries missing or renumbered)` })
      if (r.prev_hash !== prev) problems.push({ seq, problem: 'prev_hash does not link to the entry before it (an entry was removed, inserted or re-hashed)' })
      const h = entryHash(r.prev_hash, r)
      if (h !== r.hash) problems.push({ seq, problem: `content does not match its hash (the row was edited: ${describeEdit(r)})` })
      const named = keys.get(r.key_id)
      // The key whose signature verifies (key_id is not hashed: a forger may set it to anything).
      let signer: string | undefined
      if (named !== undefined) {
        if (verifySignature(named, r.hash, r.signature)) signer = r.key_id
        else problems.push({ seq, problem: 'signature does not verify with the control plane key' })
      } else {
        signer = [...keys].find(([, k]) => verifySignature(k, r.hash, r.signature))?.[0]
        if (signer === undefined) {
          problems.push({
            seq,
            problem: `signature does not verify: the entry names key ${bare(r.key_id)}, not ${keys.size === 1 ? 'the key' : 'one of the keys'} given (${givenIds}); if the signing key was replaced, verify with the old public key as well`,
          })
        }
      }
      const retired = signer === undefined ? undefined : outOfPeriod(signer, seq, num(r.at))
      if (retired !== undefined) problems.push({ seq, problem: retired })
      prev = r.hash
      expectSeq = seq + 1
    }
    entries += rows.length
    // The end: the limit admitted fewer rows than a page and none was left out for size.
    if (rows.length === 0 || (rows.length === num(rows[0]!.fetched) && rows.length < pageRows)) break
    after = rows[rows.length - 1]!.seq as SqlValue
    // A page's signatures take tens of milliseconds: let the API's other requests run between pages.
    await new Promise((resolve) => setImmediate(resolve))
  }
  // Every start on a new key writes `audit.key_rotated` with it (store.markSigningKey): a chain the
  // current key signed nothing of had its tail re-signed with a replaced key, from before the
  // current one took over, which the periods alone cannot see.
  if (keys.size > 1 && entries > 0 && currentFirst === undefined) {
    problems.push({
      seq: expectSeq - 1,
      problem: `the current key ${currentId} signed no entry: every start on a new signing key writes an audit.key_rotated entry with it, so the chain's tail was signed again with a replaced key, or no control plane has started on this key yet (then verify with the key it runs on)`,
    })
  }
  return { ok: problems.length === 0, entries, headHash: prev, problems }
}

/**
 * A stored text as a quoted, escaped literal for a problem text. Whoever edited the row chose it,
 * and `igw audit verify` prints it to a terminal: raw, a newline could add a forged line to the
 * report and an escape sequence could erase the TAMPERED verdict on screen. JSON.stringify escapes
 * C0 controls; C1 controls, line/paragraph separators and bidirectional overrides are escaped too.
 */
function shown(text: string, max = 200): string {
  const cut = text.length > max ? `${text.slice(0, max)}…` : text
  return JSON.stringify(cut).replace(/[\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** Printable ASCII without spaces or quotes as it is (`tenants.put`); anything else quoted by shown(). */
function bare(text: string): string {
  return /^[!#-~]{1,200}$/.test(text) ? text : shown(text)
}

function describeEdit(r: AuditRow): string {
  return `actor=${shown(r.actor)} action=${bare(r.action)} resource=${bare(r.resource)}`
}
