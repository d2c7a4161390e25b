// The proxy's side of config push. `igw proxy --control-plane URL --control-plane-token T`:
//  1. boot: take the head snapshot from the control plane's event stream; if the control plane
//     cannot be reached, boot from the last good signed snapshot on disk (signature checked with
//     the pinned control plane key); only then fall back to --config/--upstream.
//  2. run: every later snapshot is verified (ed25519), validated with the proxy's own schema and
//     applied through the supervisor; ACKed when every worker took it, NACKed with the error
//     otherwise (the running config stays). Good snapshots are persisted as last-known-good.
//  3. report per-tenant usage every few seconds (numbered, retried in order, never double-counted;
//     those undelivered at shutdown are kept in the state dir and sent at the next start).
// Unlike Envoy, which keeps last-known-good only in memory, a restarted proxy keeps serving here.
//
// Nothing is refused silently: a snapshot that does not verify, or that is older than the one this
// proxy holds (versions only move forward, so an old signed snapshot cannot be replayed), is NACKed
// with the reason and so shows as lastNack in GET /v1/proxies. A booting proxy follows the same
// rule: it never takes a head older than its verified last-known-good.
import { createPublicKey, randomUUID, verify, type KeyObject } from 'node:crypto'
import { accessSync, constants, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { decodeJwt, type JWTPayload } from 'jose'
import { request } from 'undici'
import { keyIdOf } from '../config/key-id.ts'
import { ConfigError, validateConfig } from '../config/load.ts'
import type { GatewayConfig } from '../config/schema.ts'
import { processAlive, writeFileAtomicSync } from './atomic-file.ts'
import type { ConfigSource, ProxyHandle } from './supervisor.ts'
import type { UsageSnapshot } from './tenant-usage.ts'
import { LogWindow } from './log.ts'
import { retryAfterMs as parseRetryAfter } from './headers.ts'
import { sseField } from './sse.ts'

/** Usage reports kept while the control plane does not accept them: ~1 h at the 5 s default. */
const MAX_PENDING_REPORTS = 720
/** A usage report as posted; `bootId` is an earlier run's for reports it left undelivered. */
interface UsageReportOut {
  bootId: string
  seq: number
  at: string
  tenants: UsageSnapshot
}
/** How long close() waits for the usage report it sends before the shutdown goes on. */
const CLOSE_FLUSH_MS = 2_000
/**
 * An ACK/NACK the control plane did not take is retried after 1 s, doubling to 30 s, with jitter and
 * at least its Retry-After (ReconnectPolicy, as the stream): a push refused fleet-wide (a 503 while
 * its database is busy) was retried by every proxy at the same 1 s, 2 s, 4 s, in step.
 */
const ANSWER_RETRY_MIN_MS = 1_000
const ANSWER_RETRY_MAX_MS = 30_000
/** A version the workers refused is tried again after 2 s, doubling to 60 s (as a refused file reload, supervisor.ts). */
const REFUSED_RETRY_MIN_MS = 2_000
const REFUSED_RETRY_MAX_MS = 60_000
/** Refusals that may pass (as for usage reports): a token being rotated or a role being granted, a timeout, load shedding; and any 5xx. */
const RETRIED_STATUSES = new Set([401, 403, 408, 429])

/** A proxy's answer to a version: POST /v1/proxies/{id}/ack. */
interface Answer {
  version: number
  ok: boolean
  error?: string
  digest?: string
}

export interface ControlPlaneClientOptions {
  url: string
  /**
   * The bearer token, or a function giving the current one: `--control-plane-token-file` is read
   * again for every request, so a rotated token (a Kubernetes Secret or projected token mounted
   * as a file) is used without a restart.
   */
  token: string | (() => string)
  /** Directory for last-good.json, the pinned key, the proxy id and undelivered usage reports (default .igw-state). */
  stateDir: string
  /** PEM public key of the control plane; else pinned on first contact (trust on first use). */
  publicKeyPem?: string
  /**
   * PEM public keys the control plane signed with before a planned key replacement
   * (--control-plane-previous-keys): a last-known-good one of them signed is still booted from.
   * Never for a snapshot from the network: those verify with the pinned key only.
   */
  previousKeyPems?: string[]
  proxyId?: string
  /** Turns the document's raw form into this proxy's config (flag overrides, then validation). */
  toConfig: (document: unknown, source: string) => GatewayConfig
  usageIntervalMs?: number
  /** How long boot waits for the control plane before using the file. */
  bootTimeoutMs?: number
  log: (level: 'info' | 'warn' | 'error', obj: Record<string, unknown>, msg: string) => void
}

interface Envelope {
  payload: string
  keyId?: string
  signature: string
}

interface Payload {
  version: number
  digest: string
  issuedAt: string
  document: unknown
}

/**
 * Write a file whole or not at all: a temp file beside it (created with `mode`: the snapshot holds
 * the config's secrets), flushed to disk, then renamed over the path, and the directory flushed so
 * the rename survives a power loss too. Without the flush a power cut soon after a push could
 * leave last-good.json empty (the rename reached the disk before the data), refused at the next
 * start. A write that fails (disk full) removes its temp file: the partial copy of the document
 * stayed behind, holding part of its secrets and the space that ran out.
 */
function writeFileAtomic(path: string, text: string, mode: number): void {
  // proxy/atomic-file.ts's rule, under the temp name removeStaleTemps and operators know
  // (`<file>.<pid>.tmp`): only the main thread writes the state dir, one write at a time.
  writeFileAtomicSync(path, text, { mode, tmp: `${path}.${process.pid}.tmp` })
}

/**
 * writeFileAtomic's temp files in the state dir: `<file>.<pid>.tmp` of the files igw keeps there.
 * Nothing else matches: an operator's copy (`last-good.json.bak`) is never touched.
 */
const STATE_TEMP = /^(?:last-good\.json|proxy-id|usage-pending\.json|control-plane\.pub\.pem)\.(\d{1,10})\.tmp$/
/** A temp file younger than this whose pid is a live process may be another proxy's write in progress (a shared state dir). */
const TEMP_IN_USE_MS = 60_000

/**
 * Remove the temp files a run that crashed mid-write left in the state dir. Each holds a copy of
 * what was being written — last-good.json's holds the config's secrets — and, named by that run's
 * pid, was never overwritten or removed by a later run. Regular files only (not a symlink or a
 * directory); not one a live process other than this one may still be writing.
 */
function removeStaleTemps(dir: string): { removed: string[]; failed: { name: string; error: string }[] } {
  const removed: string[] = []
  const failed: { name: string; error: string }[] = []
  let names: string[]
  try {
    names = readdirSync(dir)
  } catch {
    return { removed, failed }
  }
  for (const name of names) {
    const m = STATE_TEMP.exec(name)
    if (m === null) continue
    const path = join(dir, name)
    try {
      const st = lstatSync(path)
      if (!st.isFile()) continue
      const pid = Number(m[1])
      if (pid !== process.pid && processAlive(pid) && Date.now() - st.mtimeMs < TEMP_IN_USE_MS) continue
      rmSync(path, { force: true })
      removed.push(name)
    } catch (err) {
      failed.push({ name, error: (err as Error).message })
    }
  }
  return { removed, failed }
}

/**
 * The last-known-good file's envelope, or an error naming the file and saying what is wrong with
 * it: JSON.parse said only "Unexpected end of JSON input" for a file cut short (a copy interrupted,
 * a disk that filled before the atomic write), with no path and no word of what the proxy does.
 */
function readEnvelopeFile(path: string): unknown {
  const st = lstatSync(path, { throwIfNoEntry: false })
  if (st !== undefined && st.isDirectory()) throw new Error(`${path} is a directory, not the snapshot file: not used; remove it (the proxy writes the file again once it runs a control plane version)`)
  const text = readFileSync(path, 'utf8')
  const after = 'not used; the proxy writes it again once it runs a control plane version (delete it to stop this message)'
  if (text.trim() === '') throw new Error(`${path} is empty (a write or copy was interrupted): ${after}`)
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    // Cut short: the parser ran out of text (no end, or its error is at the very end), not into a wrong character.
    const m = /end of JSON input|at position (\d+)/.exec((err as Error).message)
    const cut = m !== null && (m[1] === undefined || Number(m[1]) >= text.trimEnd().length)
    throw new Error(`${path} is ${cut ? `truncated (${text.length} characters, cut short: a write or copy was interrupted)` : `damaged (not JSON: ${(err as Error).message})`}: ${after}`)
  }
}

/** TLS certificate verdicts from OpenSSL / Node that an operator fixes by trusting the control plane's CA (or fixing its certificate). */
const CERT_CODES = new Set(['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID'])

/**
 * Why a connection attempt to the control plane failed, in words an operator can act on. The
 * scheme mismatches said nothing useful: https:// to a plain-HTTP control plane logged OpenSSL's
 * "…:error:0A00010B:SSL routines:tls_validate_record_header:wrong version number:../deps/openssl/…",
 * and http:// to a TLS one "other side closed".
 */
export function connectProblem(err: unknown, url: string): string {
  const e = err as Error & { code?: string }
  const message = String(e?.message ?? err).trim()
  let origin = url
  let https = false
  try {
    const u = new URL(url)
    origin = u.origin
    https = u.protocol === 'https:'
  } catch {}
  if (e?.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/.test(message)) {
    return `${origin} does not answer with TLS (${https ? 'it looks like plain HTTP: use an http:// URL for --control-plane, or serve the control plane with TLS' : 'TLS handshake failed'})`
  }
  if (e?.code !== undefined && CERT_CODES.has(e.code)) {
    return `the TLS certificate of ${origin} is not accepted: ${message} (${e.code}); a control plane with a private CA: give its CA certificate with NODE_EXTRA_CA_CERTS=<PEM file>`
  }
  if (!https && e?.code === 'UND_ERR_SOCKET' && /other side closed/.test(message)) {
    return `${message}: ${origin} closed the connection without answering (if the control plane serves TLS, use an https:// URL for --control-plane)`
  }
  return message
}

/** The proxy ids the control plane's GET /v1/stream admits (control-plane/api.ts). */
const PROXY_ID = /^[\w.:@-]{1,200}$/

export class SnapshotRejected extends Error {}
/** The envelope is well formed but not signed by the pinned key. */
export class SignatureMismatch extends SnapshotRejected {}

/** Verify an envelope with the key; returns the payload. Throws SnapshotRejected saying why. */
export function verifyEnvelope(envelope: unknown, key: KeyObject): Payload {
  const e = envelope as Partial<Envelope> | null
  if (e === null || typeof e !== 'object' || typeof e.payload !== 'string' || typeof e.signature !== 'string') throw new SnapshotRejected('not a signed snapshot')
  let ok = false
  try {
    ok = verify(null, Buffer.from(e.payload), key, Buffer.from(e.signature, 'base64'))
  } catch {
    ok = false
  }
  // Both key ids: a key file lost and regenerated on the control plane shows as two different ids.
  if (!ok) throw new SignatureMismatch(`signature does not verify with the pinned control plane key ${keyIdOf(key)}${typeof e.keyId === 'string' ? ` (the snapshot names key ${e.keyId})` : ''}`)
  let p: Payload
  try {
    p = JSON.parse(e.payload) as Payload
  } catch {
    throw new SnapshotRejected('payload is not JSON')
  }
  if (!Number.isInteger(p.version) || p.version < 1) throw new SnapshotRejected('payload has no valid version')
  return p
}

/** An ed25519 public key from PEM (SPKI, or the public half of a private key); else an error saying what it is. */
function parseControlPlaneKey(pem: string): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch {
    // OpenSSL's own text ("DECODER routines::unsupported") says nothing more.
    throw new Error("not a PEM public key: expected the PEM that the control plane's GET /v1/signing-key prints")
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a key of type ${key.asymmetricKeyType ?? 'unknown'}, not ed25519: the control plane signs snapshots with ed25519 (GET /v1/signing-key prints its key)`)
  return key
}

/** The #logOnce key of a version that does not validate here, for that reason. */
const invalidKey = (version: number, reason: string): string => `invalid:${version}:${reason}`

/** The version a refused envelope claims (unverified: only to name it in the NACK); else the event id; else 0. */
function claimedVersion(data: string, eventId: string | undefined): number {
  try {
    const v = (JSON.parse((JSON.parse(data) as Envelope).payload) as Payload).version
    if (Number.isInteger(v)) return v
  } catch {}
  const n = Number(eventId)
  return Number.isInteger(n) ? n : 0
}

export type VersionJudgement = { kind: 'newer' } | { kind: 'same' } | { kind: 'older'; reason: string }

/**
 * May a verified snapshot replace the one this proxy holds? Versions only move forward: a
 * signed snapshot older than the held one (or another document under the same version) is
 * refused, so an old snapshot cannot be replayed. That also happens, honestly, when the control
 * plane's store was reset or restored from a backup; the reason says how to get out of it.
 */
export function judgeVersion(incoming: { version: number; digest?: string | undefined }, held: { version: number; digest?: string | undefined }, heldAs: string): VersionJudgement {
  if (incoming.version > held.version) return { kind: 'newer' }
  const way = `versions only move forward (was the control plane's store reset or restored from a backup?): commit until its head passes version ${held.version}, or delete last-good.json in the proxy's state dir and restart it to take the control plane's head`
  if (incoming.version < held.version) return { kind: 'older', reason: `version ${incoming.version} is older than version ${held.version}, ${heldAs}; ${way}` }
  if (incoming.digest !== undefined && held.digest !== undefined && incoming.digest !== held.digest) {
    return { kind: 'older', reason: `version ${incoming.version} is another document than version ${held.version}, ${heldAs} (digest ${incoming.digest.slice(0, 12)}, not ${held.digest.slice(0, 12)}); ${way}` }
  }
  return { kind: 'same' }
}

/**
 * When to reconnect the config stream (a small state machine, no I/O). Failed connection attempts
 * back off 250 ms → 5 s, or as long as the control plane's Retry-After asks. A stream the control
 * plane ends (cleanly) before it lived `stableMs` counts as a quick end, and consecutive quick
 * ends back off 250 ms → 30 s: the usual cause is another proxy with the same id — the control
 * plane keeps one stream per id and ends the older one — and reconnecting at once only kicks that
 * proxy, which kicks back, forever. A stream that lived long resets the count; one that broke
 * (a network error) is no quick end (broke). Delays carry "equal jitter" (half fixed, half random) so proxies that lost the same
 * control plane, or two twins, do not come back in step; an end the whole fleet shares (the
 * control plane shutting down, a token expiring) gets full jitter (fleetEnded).
 */
export class ReconnectPolicy {
  readonly #o: { baseMs: number; failureCapMs: number; quickEndCapMs: number; stableMs: number }
  readonly #random: () => number
  #failures = 0
  #quickEnds = 0

  constructor(o?: Partial<{ baseMs: number; failureCapMs: number; quickEndCapMs: number; stableMs: number }>, random: () => number = Math.random) {
    this.#o = { baseMs: 250, failureCapMs: 5_000, quickEndCapMs: 30_000, stableMs: 60_000, ...o }
    this.#random = random
  }

  /**
   * The stream gave its first event (the control plane's head or `current`): the attempt
   * succeeded. Not the 200 alone: reset there, a stream that answered 200 and broke before any
   * event (an intermediary cutting it, a server failing after its headers) started every next
   * wait from the base — a reconnect every 125–250 ms for as long as it lasted.
   */
  opened(): void {
    this.#failures = 0
  }

  /**
   * A connection attempt failed (refused, timed out, an error status): the delay before the next.
   * `atLeastMs`: the control plane's Retry-After. Proxies told the same wait spread over a tenth
   * more of it, or they would all come back in step to the control plane that shed them.
   */
  failed(atLeastMs = 0): number {
    this.#failures++
    const d = this.#delay(this.#failures, this.#o.failureCapMs)
    return d >= atLeastMs ? d : Math.round(atLeastMs + (this.#random() * atLeastMs) / 10)
  }

  /** An opened stream ended after `livedMs`: the delay before reconnecting, and whether it was quick. */
  ended(livedMs: number): { delayMs: number; quick: boolean; quickEnds: number } {
    this.#failures = 0
    if (livedMs >= this.#o.stableMs) {
      this.#quickEnds = 0
      return { delayMs: this.#delay(1, this.#o.quickEndCapMs), quick: false, quickEnds: 0 }
    }
    this.#quickEnds++
    return { delayMs: this.#delay(this.#quickEnds, this.#o.quickEndCapMs), quick: true, quickEnds: this.#quickEnds }
  }

  /**
   * An opened stream broke (a network error, a reset, no heartbeat): not a quick end — the control
   * plane ends a twin's stream cleanly, so a break says nothing about another proxy with this id.
   * Counted as one, a flapping network path pushed reconnects out to 30 s. As Envoy's xDS client
   * resets its backoff once a stream got a response, a stream that gave its first event (`healthy`)
   * was a success: reconnect after the base delay. One that broke before any event is a failed
   * attempt (250 ms → 5 s).
   */
  broke(livedMs: number, healthy: boolean): number {
    if (livedMs >= this.#o.stableMs) this.#quickEnds = 0
    if (!healthy) return this.failed()
    this.#failures = 0
    return this.#delay(1, this.#o.failureCapMs)
  }

  /**
   * An opened stream ended at a moment the whole fleet shares: the control plane shut down, or the
   * token it was opened with expired (one token shared, or tokens minted together). Not a quick end
   * (nothing says another proxy has this id). Every proxy reconnecting 125–250 ms later came back
   * in one burst, so the delay is "full jitter" (0 up to the failure cap) to spread them.
   */
  fleetEnded(): number {
    this.#failures = 0
    return Math.round(this.#random() * this.#o.failureCapMs)
  }

  #delay(n: number, capMs: number): number {
    const d = Math.min(capMs, this.#o.baseMs * 2 ** Math.min(n - 1, 20))
    return Math.round(d / 2 + (this.#random() * d) / 2)
  }
}

export type SseEvent = { event: string; data: string; id?: string }

/** What the stream gave bootstrap(): the head, or the reason its snapshot was refused. */
type BootHead = { kind: 'snapshot'; payload: Payload; envelope: Envelope } | { kind: 'refused'; version: number; reason: string; signature: boolean } | { kind: 'empty' } | { kind: 'stream-refused'; reason: string }

/**
 * The control plane (or whatever serves --control-plane) answered the stream request, but not
 * with a stream: an error status (a token without the proxy role, a proxy id it does not admit)
 * or a 200 that is no event stream. It is reachable: what is wrong is the request or the URL.
 */
class StreamRefused extends Error {
  readonly status: number
  readonly retryAfterMs: number
  constructor(message: string, status: number, retryAfterMs = 0) {
    super(message)
    this.status = status
    this.retryAfterMs = retryAfterMs
  }
}

/** The longest Retry-After honoured: a wrong or hostile value must not park a proxy for hours. */
export const RETRY_AFTER_CAP_MS = 60_000

/** A Retry-After header in milliseconds from `now` (headers.ts), capped at RETRY_AFTER_CAP_MS. */
export function retryAfterMs(header: string | string[] | undefined, now = Date.now()): number {
  return Math.min(parseRetryAfter(header, now), RETRY_AFTER_CAP_MS)
}

/**
 * The longest event the config stream may send, in characters. The control plane refuses a
 * document over 16 MiB; its snapshot event holds it as a JSON string inside a JSON string, which
 * escaping at most doubles: 64 Mi characters leaves room and bounds what a stream can make the
 * proxy hold.
 */
export const MAX_SSE_EVENT_CHARS = 64 * 1024 * 1024

/**
 * Parse a text/event-stream body into events (the subset the control plane sends).
 *
 * A snapshot is one `data:` line as long as the document (megabytes) that arrives as hundreds of
 * reads. Each read is searched for line ends on its own and kept in a list until its line ends:
 * appending every read to one string and searching that from its start re-scanned (and V8
 * re-flattened) everything received so far on every read — quadratic, ~6 s of CPU on the
 * supervisor's thread for a 16 MB document in 16 KiB reads.
 */
export async function* sseEvents(body: AsyncIterable<unknown>, maxEventChars = MAX_SSE_EVENT_CHARS): AsyncGenerator<SseEvent> {
  /** The current line's text so far (it holds no line end). */
  const parts: string[] = []
  /** Characters in `parts`. */
  let pending = 0
  let ev: SseEvent = { event: 'message', data: '' }
  // One decoder for the whole stream: a multi-byte character split across two reads (a
  // non-ASCII display name in a large snapshot) is joined, not turned into two U+FFFD that
  // break the payload's signature.
  const utf8 = new TextDecoder('utf-8')
  for await (const chunk of body) {
    const text = utf8.decode(chunk as Buffer, { stream: true })
    let from = 0
    let i
    while ((i = text.indexOf('\n', from)) !== -1) {
      parts.push(text.slice(from, i))
      from = i + 1
      const joined = parts.length === 1 ? parts[0]! : parts.join('')
      parts.length = 0
      pending = 0
      const line = joined.endsWith('\r') ? joined.slice(0, -1) : joined
      if (line === '') {
        if (ev.data !== '') yield ev
        ev = { event: 'message', data: '' }
      } else {
        const f = sseField(line)
        if (f === undefined) continue
        const [field, value] = f
        if (field === 'event') ev.event = value
        else if (field === 'data') ev.data = ev.data === '' ? value : `${ev.data}\n${value}`
        else if (field === 'id') ev.id = value
      }
    }
    if (from < text.length) {
      const rest = from === 0 ? text : text.slice(from)
      parts.push(rest)
      pending += rest.length
    }
    // Bounded: a line that never ends (a server that is not the control plane, a broken path
    // repeating bytes) was kept whole, growing the supervisor's heap until the process, data
    // plane and all, died of it. The stream is dropped instead, as a failed attempt.
    if (pending + ev.data.length > maxEventChars) throw new Error(`the config stream sent an event of over ${maxEventChars} characters (a control plane's largest snapshot is about half that): not the control plane's stream, or a broken one; dropped`)
  }
}

export class ControlPlaneClient {
  readonly #o: ControlPlaneClientOptions
  readonly proxyId: string
  readonly bootId = randomUUID()
  #key: KeyObject | undefined
  /** Keys a last-known-good may also be signed by (previousKeyPems). */
  readonly #previousKeys: KeyObject[] = []
  /** Where the pinned key came from, for messages. */
  #keySource = 'given with --control-plane-key'
  #version = 0
  /** Digest of the running version's document (undefined when running --config/--upstream). */
  #digest: string | undefined
  /**
   * The running version came from a last-known-good a replaced key signed (--control-plane-previous-keys):
   * the stream asks for the head signed with the pinned key (`key`), and the file is rewritten with it,
   * so a later restart no longer needs the old key.
   */
  #heldByPreviousKey = false
  #handle: ProxyHandle | undefined
  #closed = false
  #abort = new AbortController()
  #usageTimer: NodeJS.Timeout | undefined
  #pending: UsageReportOut[] = []
  #seq = 0
  /** close() began: undelivered usage reports are kept on disk from here on. */
  #closing = false
  /** usage-pending.json holds reports (an earlier run's, or this one's at close). */
  #unsentOnDisk = false
  #connected = false
  /** A stream answered 200 and has given no event yet: the head may be on its way. */
  #receivingHead = false
  /** A snapshot that arrived while the proxy was still starting; applied on attach(). */
  #early: string | undefined
  /** Resolves the first snapshot seen on the stream during boot. */
  #first: ((p: BootHead) => void) | undefined
  /** Why the control plane's answer at boot was not used; for the exit message when nothing else is. */
  #bootProblem: string | undefined
  /** Warnings already logged (one per refused version and reason, not one per reconnect). */
  readonly #warned = new Set<string>()
  readonly #reconnect = new ReconnectPolicy()
  /** Resolves when the first connection attempt during boot failed (no need to wait longer); with the answer, when there was one. */
  #firstFailure: ((refused?: StreamRefused) => void) | undefined

  constructor(o: ControlPlaneClientOptions) {
    this.#o = { ...o, url: o.url.replace(/\/+$/, '') }
    // A state dir that cannot be made (a read-only root file system, a path through a file)
    // crashed the start with a stack (exit 1) instead of naming the flag (exit 78).
    const unusable = (err: unknown) => new ConfigError('--state-dir', [`${o.stateDir}: ${(err as Error).message}; the proxy keeps its last-known-good snapshot, its id and the pinned control plane key there: give it a writable directory (a volume, e.g. an emptyDir or a persistent one)`])
    try {
      mkdirSync(o.stateDir, { recursive: true })
      // One that exists but cannot be written (a read-only mount) with --proxy-id given (no id
      // file to write) started: no last-known-good was ever kept, and the first restart during a
      // control plane outage could not boot.
      accessSync(o.stateDir, constants.W_OK)
    } catch (err) {
      throw unusable(err)
    }
    const stale = removeStaleTemps(o.stateDir)
    if (stale.removed.length > 0) this.#o.log('warn', { stateDir: o.stateDir, removed: stale.removed }, 'removed temp files an earlier run left in the state dir when it stopped mid-write (a copy of last-good.json holds the config\'s secrets)')
    for (const f of stale.failed) this.#o.log('error', { path: join(o.stateDir, f.name), error: f.error }, 'could not remove a temp file an earlier run left in the state dir (it may hold a copy of the config\'s secrets): remove it')
    // The control plane admits only these on its stream (400 otherwise): a proxy id with a space
    // or a "/" (`--proxy-id "$(hostname) eu"`) was retried forever as "control plane unreachable".
    // An empty `--proxy-id ""` (an unset variable in a template) silently took the stored id.
    if (o.proxyId !== undefined && !PROXY_ID.test(o.proxyId)) {
      const shown = o.proxyId.length > 60 ? `${o.proxyId.slice(0, 57)}…` : o.proxyId
      throw new ConfigError('--proxy-id', [`expected 1 to 200 letters, digits or "_.:@-" (what the control plane admits), got ${JSON.stringify(shown)}`])
    }
    try {
      this.proxyId = o.proxyId ?? boundProxyId(o.token) ?? this.#stableId()
    } catch (err) {
      throw unusable(err)
    }
    // A key that is not an ed25519 public key stops the start naming where it came from (exit 78):
    // it used to crash with OpenSSL's "DECODER routines::unsupported" and a stack (exit 1), and
    // an RSA key was taken, so every snapshot was then NACKed as "does not verify".
    if (o.publicKeyPem) {
      try {
        this.#key = parseControlPlaneKey(o.publicKeyPem)
      } catch (err) {
        throw new ConfigError('--control-plane-key', [(err as Error).message])
      }
    } else if (existsSync(this.#keyPath)) {
      let text: string
      try {
        text = readFileSync(this.#keyPath, 'utf8')
      } catch (err) {
        throw unusable(err)
      }
      if (text.trim() === '') {
        // Pinning was cut short (a crash or power loss as the file was created, before the
        // write was atomic): nothing was pinned, and nothing was received under it.
        this.#o.log('warn', { keyPath: this.#keyPath }, 'the pinned control plane key file is empty (pinning was interrupted): pinning the key again on first contact')
      } else {
        try {
          this.#key = parseControlPlaneKey(text)
        } catch (err) {
          throw new ConfigError(this.#keyPath, [`the pinned control plane key is ${(err as Error).message}; delete the file to pin the control plane's key again on first contact, or pass --control-plane-key`])
        }
        this.#keySource = `pinned on first contact in ${this.#keyPath}`
      }
    }
    for (const pem of o.previousKeyPems ?? []) {
      try {
        this.#previousKeys.push(parseControlPlaneKey(pem))
      } catch (err) {
        throw new ConfigError('--control-plane-previous-keys', [(err as Error).message])
      }
    }
    this.#pending = this.#loadUnsentUsage()
  }

  /** Why the control plane's head was not used at boot (undefined: it was, or it did not answer). */
  get bootProblem(): string | undefined {
    return this.#bootProblem
  }

  /** Log once per key: a version refused again on every reconnect is one warning, not many. */
  /** Logs once per key (until 1,000 keys were seen); true when it logged. */
  #logOnce(key: string, level: 'warn' | 'error', obj: Record<string, unknown>, msg: string): boolean {
    if (this.#warned.has(key)) return false
    if (this.#warned.size >= 1_000) this.#warned.clear()
    this.#warned.add(key)
    this.#o.log(level, obj, msg)
    return true
  }

  get version(): number {
    return this.#version
  }

  get #keyPath(): string {
    return join(this.#o.stateDir, 'control-plane.pub.pem')
  }

  get lastGoodPath(): string {
    return join(this.#o.stateDir, 'last-good.json')
  }

  get unsentUsagePath(): string {
    return join(this.#o.stateDir, 'usage-pending.json')
  }

  /**
   * The usage reports an earlier run could not deliver before it stopped (they were kept only in
   * memory, and their counts lost to statements and alerts). Sent first, under their own boot id
   * and seq: the control plane keeps a high-water per boot, so one that was counted after all (its
   * answer lost at shutdown) is not counted again. The file stays until they are delivered.
   */
  #loadUnsentUsage(): UsageReportOut[] {
    const path = this.unsentUsagePath
    if (!existsSync(path)) return []
    let reports: UsageReportOut[]
    try {
      const saved = JSON.parse(readFileSync(path, 'utf8')) as { proxyId?: unknown; reports?: unknown }
      if (!Array.isArray(saved.reports)) throw new Error('no reports list')
      reports = (saved.reports as Partial<UsageReportOut>[]).filter((r): r is UsageReportOut => typeof r?.bootId === 'string' && Number.isInteger(r.seq) && typeof r.at === 'string' && typeof r.tenants === 'object' && r.tenants !== null)
      if (saved.proxyId !== this.proxyId) {
        // Counted under another id (--proxy-id changed): a token bound to this id may not send them.
        this.#o.log('warn', { path, reports: reports.length, savedProxyId: saved.proxyId, proxyId: this.proxyId }, 'usage reports an earlier run left undelivered were made under another proxy id: dropped')
        rmSync(path, { force: true })
        return []
      }
    } catch (err) {
      this.#o.log('warn', { path, error: (err as Error).message }, 'usage reports an earlier run left undelivered cannot be read: dropped')
      rmSync(path, { force: true })
      return []
    }
    reports = reports.slice(-MAX_PENDING_REPORTS)
    this.#unsentOnDisk = reports.length > 0
    if (reports.length > 0) this.#o.log('info', { path, reports: reports.length, oldest: reports[0]!.at }, 'delivering the usage reports an earlier run left undelivered')
    return reports
  }

  /**
   * Closing: the reports not delivered yet go to disk, written whole (the process may end while
   * one is in flight; one counted after all is not counted twice, see #loadUnsentUsage). Running:
   * the file goes once the earlier run's reports are delivered.
   */
  #keepUnsentUsage(): void {
    if (!this.#closing && (!this.#unsentOnDisk || this.#pending.some((r) => r.bootId !== this.bootId))) return
    const path = this.unsentUsagePath
    try {
      const reports = this.#closing ? this.#pending : []
      if (reports.length > 0) writeFileAtomic(path, JSON.stringify({ proxyId: this.proxyId, reports }), 0o600)
      else if (this.#unsentOnDisk) rmSync(path, { force: true })
      this.#unsentOnDisk = reports.length > 0
    } catch (err) {
      this.#logOnce(`usage-file:${(err as Error).message}`, 'error', { path, reports: this.#pending.length, error: (err as Error).message }, 'could not keep the undelivered usage reports on disk: their counts are lost when the proxy stops')
    }
  }

  #stableId(): string {
    const p = join(this.#o.stateDir, 'proxy-id')
    if (existsSync(p)) {
      const kept = readFileSync(p, 'utf8').trim()
      // An empty file (a crash or power loss right after it was created) is no id: the control
      // plane refuses an empty one (400) and the proxy never connected again. A new one is made.
      if (kept !== '') return kept
    }
    const id = `${hostname()}-${randomUUID().slice(0, 8)}`
    // Whole or not at all, and a failed write (a full disk) leaves no temp file behind.
    writeFileAtomic(p, `${id}\n`, 0o644)
    return id
  }

  #token(): string {
    const t = this.#o.token
    return typeof t === 'function' ? t() : t
  }

  #headers(): Record<string, string> {
    return { authorization: `Bearer ${this.#token()}` }
  }

  async #ensureKey(): Promise<KeyObject> {
    if (this.#key) return this.#key
    const r = await request(`${this.#o.url}/v1/signing-key`, { headersTimeout: 3_000, bodyTimeout: 3_000 })
    if (r.statusCode !== 200) {
      await r.body.dump()
      throw new Error(`GET /v1/signing-key answered ${r.statusCode}`)
    }
    const { publicKeyPem } = (await r.body.json()) as { publicKeyPem: string }
    let key: KeyObject
    try {
      key = parseControlPlaneKey(String(publicKeyPem))
    } catch (err) {
      throw new Error(`GET /v1/signing-key answered ${(err as Error).message}`)
    }
    this.#key = key
    // Atomically: a crash while writing left an empty or half file, which stopped every later start.
    // A state dir that cannot take it (read-only, full) used to fail the whole attempt: the key was
    // fetched again and refused again forever, logged as "control plane unreachable" (EROFS), and
    // the proxy never took a config. It is pinned for this run and the operator told.
    try {
      writeFileAtomic(this.#keyPath, String(publicKeyPem), 0o644)
      this.#keySource = `pinned on first contact in ${this.#keyPath}`
      this.#o.log('warn', { keyPath: this.#keyPath }, 'pinned the control plane signing key on first contact (pass --control-plane-key to pin it explicitly)')
    } catch (err) {
      this.#keySource = 'pinned on first contact, for this run only (it could not be saved)'
      this.#o.log('error', { keyPath: this.#keyPath, error: (err as Error).message }, 'pinned the control plane signing key on first contact for this run only: it could not be saved, so a restart pins whatever key answers then; give a writable --state-dir or pass --control-plane-key')
    }
    return key
  }

  /**
   * The config to start with: the control plane's head, else the last good snapshot on disk.
   * Returns undefined when neither is available (the caller then uses --config or exits).
   */
  async bootstrap(): Promise<{ config: GatewayConfig; version: number; source: 'control-plane' | 'last-known-good' } | undefined> {
    const timeout = this.#o.bootTimeoutMs ?? 5_000
    const first = new Promise<BootHead>((resolve) => (this.#first = resolve))
    const failed = new Promise<BootHead | undefined>((resolve) => (this.#firstFailure = (refused) => resolve(refused === undefined ? undefined : { kind: 'stream-refused', reason: this.#refusalText(refused) })))
    void this.#streamLoop()
    let got = await Promise.race([first, failed, new Promise<undefined>((r) => setTimeout(() => r(undefined), timeout).unref())])
    if (got === undefined && this.#receivingHead && this.#readLastGood() === undefined) {
      // The control plane answered and its head is on its way (a large document, a slow link):
      // with no last-known-good to start from meanwhile, giving up here said it "did not answer",
      // and the proxy exited (or took its fallback) while the head arrived — and again at every
      // restart. Waited for as long as the stream makes progress: it fails on its own when the
      // control plane stops sending (the 45 s idle bound) or the event outgrows its bound.
      this.#o.log('info', { url: this.#o.url, waitedMs: timeout }, 'the control plane answered and is sending its head: waiting for it, as there is no last-known-good snapshot to start from meanwhile')
      got = await Promise.race([first, failed])
    }
    this.#first = undefined // later snapshots (the control plane coming back) go the normal way
    this.#firstFailure = undefined
    // It opened this proxy's stream (and so holds its row): the version booted is ACKed there.
    this.#bootAnswered = got !== undefined && got.kind !== 'stream-refused'
    if (got === undefined) return this.#bootFromLastGood('control plane unreachable')
    if (got.kind === 'empty') {
      // It answered at once: waiting out the boot timeout and then saying it "did not answer"
      // sent operators after the network instead of the control plane's empty store.
      this.#bootProblem = 'it has no config version yet (its store is empty: start it with --config <seed>, or PUT /v1/config); the proxy takes the first version committed'
      return this.#bootFromLastGood('control plane has no config version yet')
    }
    if (got.kind === 'stream-refused') {
      // It answered, with an error: "did not answer" and "unreachable" sent operators after the
      // network while the token or the proxy id was what it refused.
      this.#bootProblem = `it refused the config stream: ${got.reason}`
      return this.#bootFromLastGood('control plane refused the config stream')
    }
    if (got.kind === 'refused') {
      // Already NACKed (#onSnapshot). Nothing unverified is ever used; the file may still be.
      const hint = got.signature ? `; if the control plane's signing key was replaced on purpose, pin the new one (GET /v1/signing-key) with --control-plane-key` : ''
      this.#bootProblem = `its head (version ${got.version}) was refused: ${got.reason}; that key was ${this.#keySource}${hint}`
      return this.#bootFromLastGood('control plane head refused')
    }
    const { payload, envelope } = got
    // Never go back at boot either: a head older than the verified last-known-good (the control
    // plane's store reset or restored) would split the fleet — the proxies still running refuse it.
    let heldProblem: string | undefined
    const held = this.#readLastGood((why) => (heldProblem = why))
    const j = held === undefined ? ({ kind: 'newer' } as const) : judgeVersion(payload, held, "this proxy's last-known-good snapshot")
    if (j.kind === 'older') {
      this.#logOnce(`older:${payload.version}`, 'warn', { version: payload.version, lastKnownGood: held!.version, reason: j.reason }, 'control plane head is older than the last-known-good snapshot: NACKed it; booting from the last-known-good')
      this.#bootProblem = `its head (version ${payload.version}) was refused: ${j.reason}`
      await this.#ack(payload.version, false, j.reason)
      return this.#bootFromLastGood('control plane head is older than the last-known-good snapshot')
    }
    try {
      const config = this.#o.toConfig(payload.document, `control plane version ${payload.version}`)
      this.#version = payload.version
      this.#digest = payload.digest
      // Written as last-known-good only once the proxy started with it (ackBoot): a head that
      // validates but cannot start here (a file it names is missing) must not replace the
      // snapshot a restart would fall back to.
      this.#bootEnvelope = envelope
      // Skipped and then overwritten by the head without a word: the operator never learned the
      // file (their fallback for the next outage) had been damaged, nor by what.
      if (heldProblem !== undefined) this.#o.log('warn', { path: this.lastGoodPath, error: heldProblem }, 'the last-known-good snapshot on disk is not usable; booting from the control plane head, which replaces it')
      return { config, version: payload.version, source: 'control-plane' }
    } catch (err) {
      // The head does not validate here (schema skew, a missing file): say so, try the file.
      const msg = err instanceof ConfigError ? err.problems.join('; ') : (err as Error).message
      // Keyed as the running proxy's refusal: the same head sent again after the start is not logged or counted twice.
      this.#logOnce(invalidKey(payload.version, msg), 'error', { version: payload.version, error: msg }, 'control plane head rejected at boot')
      this.#bootProblem = `its head (version ${payload.version}) does not validate here: ${msg}`
      this.#noteRejected()
      await this.#ack(payload.version, false, msg) // awaited: the proxy may exit right after
      return this.#bootFromLastGood('control plane head rejected')
    }
  }

  /** The last good snapshot, now the version this proxy runs; undefined when there is none. */
  #bootFromLastGood(why: string): { config: GatewayConfig; version: number; source: 'last-known-good' } | undefined {
    const lkg = this.loadLastGood(why)
    if (lkg === undefined) return undefined
    this.#version = lkg.version
    this.#digest = lkg.digest
    this.#heldByPreviousKey = lkg.previousKey !== undefined
    return { config: lkg.config, version: lkg.version, source: 'last-known-good' }
  }

  /**
   * The persisted snapshot if its signature verifies (not validated, nothing logged); else
   * undefined, and `problem` is told why when there is a file.
   */
  #readLastGood(problem?: (why: string) => void): Payload | undefined {
    if (!existsSync(this.lastGoodPath)) return undefined
    try {
      return this.#verifyHeld(readEnvelopeFile(this.lastGoodPath)).payload
    } catch (err) {
      // A file that does not verify sets no floor; loadLastGood says why if used.
      problem?.(err instanceof Error ? err.message : 'no control plane key to verify it with')
      return undefined
    }
  }

  /** The persisted snapshot, verified and validated; undefined (with a logged reason) otherwise. */
  loadLastGood(why = 'control plane unreachable'): { config: GatewayConfig; version: number; digest: string; previousKey?: string } | undefined {
    const path = this.lastGoodPath
    if (!existsSync(path)) {
      this.#o.log('error', { path }, `${why} and no last-known-good snapshot on disk`)
      return undefined
    }
    if (this.#key === undefined && this.#previousKeys.length === 0) {
      this.#o.log('error', { path }, 'refusing the last-known-good snapshot: no control plane key to verify it with (--control-plane-key)')
      return undefined
    }
    try {
      const { payload, previousKey } = this.#verifyHeld(readEnvelopeFile(path))
      const config = this.#o.toConfig(payload.document, `${path} (version ${payload.version})`)
      const signedBy = previousKey === undefined ? {} : { signedByPreviousKey: previousKey }
      this.#o.log('warn', { path, version: payload.version, issuedAt: payload.issuedAt, ...signedBy }, `${why}: booting from the last-known-good snapshot`)
      return { config, version: payload.version, digest: payload.digest, ...(previousKey === undefined ? {} : { previousKey }) }
    } catch (err) {
      const hint = err instanceof SignatureMismatch ? `; if the control plane's key was replaced on purpose, pass the old one with --control-plane-previous-keys` : ''
      this.#o.log('error', { path, error: `${(err as Error).message}${hint}` }, 'refusing the last-known-good snapshot')
      return undefined
    }
  }

  /**
   * The last-known-good verified with the pinned key, else with a key the control plane replaced
   * (--control-plane-previous-keys; its id returned): re-pinned to the new key and restarted while
   * the control plane was away, the proxy refused the file it kept under the old one and, with no
   * other config, exited 78. Throws the pinned key's refusal when none verifies.
   */
  #verifyHeld(envelope: unknown): { payload: Payload; previousKey?: string } {
    let refusal: unknown
    for (const [i, key] of [this.#key, ...this.#previousKeys].entries()) {
      if (key === undefined) continue
      try {
        const payload = verifyEnvelope(envelope, key)
        return i === 0 ? { payload } : { payload, previousKey: keyIdOf(key) }
      } catch (err) {
        refusal ??= err
        if (!(err instanceof SignatureMismatch)) break
      }
    }
    throw refusal
  }

  #persist(envelope: Envelope): void {
    writeFileAtomic(this.lastGoodPath, JSON.stringify(envelope), 0o600)
  }

  /** Start applying pushed versions to the running proxy, and reporting usage. */
  attach(handle: ProxyHandle): void {
    this.#handle = handle
    for (; this.#rejectedBeforeAttach > 0; this.#rejectedBeforeAttach--) handle.noteRejected()
    const every = this.#o.usageIntervalMs ?? 5_000
    this.#usageTimer = setInterval(() => void this.reportUsage(), every)
    this.#usageTimer.unref()
    const early = this.#early
    this.#early = undefined
    if (early !== undefined && this.#key !== undefined) void this.#onSnapshot(early, this.#key)
  }

  async #streamLoop(): Promise<void> {
    while (!this.#closed) {
      let openedAt: number | undefined
      /** The stream gave its first event (the control plane's head or `current`). */
      let healthy = false
      let endedByServer = false
      /** The control plane said it is shutting down before it ended the stream. */
      let shutdown = false
      let retryAfter = 0
      /** When the token this stream is opened with expires (epoch ms; undefined: no exp, or not a JWT). */
      let tokenExpMs: number | undefined
      try {
        const key = await this.#ensureKey()
        const q = new URLSearchParams({ proxy: this.proxyId, version: String(this.#version), boot: this.bootId, hostname: hostname() })
        // The digest of the document it runs: a control plane whose store holds ANOTHER document
        // under the same version number (reset or restored, then committed up to it again) sends
        // that head instead of `current`, and this proxy refuses it visibly (NACK) instead of
        // staying on its own version N unnoticed. Older control planes ignore the parameter.
        if (this.#version > 0 && this.#digest !== undefined) q.set('digest', this.#digest)
        // Its last-known-good is signed by a replaced key: a control plane whose head (this same
        // version) is signed by the pinned one sends it instead of `current` (#onSnapshot keeps it).
        if (this.#heldByPreviousKey && this.#digest !== undefined) q.set('key', keyIdOf(key))
        const token = this.#token()
        tokenExpMs = tokenExpiry(token)
        const r = await request(`${this.#o.url}/v1/stream?${q}`, {
          headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
          signal: this.#abort.signal,
          headersTimeout: 5_000,
          bodyTimeout: 45_000, // three missed heartbeats: the control plane is gone
        })
        if (r.statusCode !== 200) {
          const text = await r.body.text()
          // A control plane shedding load (503, 429) says when to come back: retrying sooner (the
          // 5 s backoff cap) only adds to the load it is shedding.
          throw new StreamRefused(`stream answered ${r.statusCode}: ${text.slice(0, 300)}`, r.statusCode, retryAfterMs(r.headers['retry-after']))
        }
        // A 200 that is no event stream is not the control plane (--control-plane names another
        // server: a proxy, a web page, a login page in front): a failed attempt saying so. Read
        // as a stream it gave no events and ended — booting waited out its whole timeout to say
        // "unreachable", and running reconnected blaming "another proxy with the same proxy id".
        const type = String(r.headers['content-type'] ?? '')
        if (!/^text\/event-stream\s*(;|$)/i.test(type)) {
          await r.body.dump().catch(() => undefined)
          throw new StreamRefused(`${this.#o.url}/v1/stream answered 200 with ${type === '' ? 'no content-type' : `content-type ${type.slice(0, 100)}`}, not an event stream: is --control-plane the control plane's URL?`, 200)
        }
        openedAt = Date.now()
        this.#receivingHead = true
        for await (const ev of sseEvents(r.body)) {
          this.#receivingHead = false
          // Connected once the stream gives its first event, not at its 200: a stream cut before
          // any (an intermediary, a server failing after its headers) is a failed attempt, backed
          // off and logged as one, not a "connected" and a "lost" line on every try.
          if (!healthy) {
            if (!this.#connected) this.#o.log('info', { url: this.#o.url, proxyId: this.proxyId, version: this.#version, ...(this.#retryFailures > 0 ? { failedAttempts: this.#retryFailures } : {}) }, 'connected to the control plane')
            this.#connected = true
            this.#retryFailures = 0
            this.#retryLog.reset()
            this.#reconnect.opened()
          }
          healthy = true
          if (ev.event === 'snapshot') await this.#onSnapshot(ev.data, key, ev.id)
          else if (ev.event === 'current') await this.#onCurrent(ev.data)
          else if (ev.event === 'shutdown') shutdown = true
        }
        endedByServer = true
      } catch (err) {
        this.#receivingHead = false
        if (this.#closed) return
        this.#retryFailures++
        const refused = err instanceof StreamRefused ? err : undefined
        retryAfter = refused?.retryAfterMs ?? 0
        const error = refused !== undefined ? this.#refusalText(refused) : openedAt === undefined ? connectProblem(err, this.#o.url) : healthy ? (err as Error).message : `the config stream opened but broke before its first event: ${(err as Error).message}`
        if (this.#connected) this.#o.log('warn', { error }, 'lost the control plane; serving the running config and retrying')
        else if (this.#firstFailure) this.#o.log('warn', { url: this.#o.url, error }, refused !== undefined ? 'the control plane refused the config stream' : 'control plane unreachable')
        else {
          // Every later failed attempt was silent: a proxy cut off for hours (its token expired
          // or rotated to a wrong one, a NetworkPolicy, the control plane down) said so once, at
          // the first failure, and never again. Logged once a minute, with the count and the reason.
          const held = this.#retryLog.take()
          if (held !== undefined) this.#o.log('warn', { url: this.#o.url, error, failedAttempts: this.#retryFailures }, refused !== undefined ? 'the control plane still refuses the config stream; serving the running config and retrying' : 'control plane still unreachable; serving the running config and retrying')
        }
        this.#connected = false
        this.#firstFailure?.(refused)
      }
      this.#receivingHead = false
      // An attempt over without any event (ended, or failed: the catch told boot already) is no
      // answer to wait for: boot goes on with what else there is.
      if (!healthy) this.#firstFailure?.()
      if (this.#closed) return
      let delayMs: number
      if (openedAt === undefined) delayMs = this.#reconnect.failed(retryAfter)
      else if (endedByServer && shutdown) {
        delayMs = this.#reconnect.fleetEnded()
        this.#o.log('info', { proxyId: this.proxyId, livedMs: Date.now() - openedAt, retryInMs: delayMs }, 'the control plane ended the config stream: it is shutting down; serving the running config and reconnecting')
      } else if (endedByServer && tokenExpMs !== undefined && Date.now() >= tokenExpMs) {
        // The control plane ends a stream when its token is no longer accepted: counted as a quick
        // end, a token with under a minute left was blamed on "another proxy with the same id".
        delayMs = this.#reconnect.fleetEnded()
        this.#o.log('info', { proxyId: this.proxyId, livedMs: Date.now() - openedAt, retryInMs: delayMs, tokenExpiredAt: new Date(tokenExpMs).toISOString() }, 'the control plane ended the config stream: the token it was opened with expired; reconnecting with the current token')
      } else if (!endedByServer) delayMs = this.#reconnect.broke(Date.now() - openedAt, healthy)
      else {
        const livedMs = Date.now() - openedAt
        const end = this.#reconnect.ended(livedMs)
        delayMs = end.delayMs
        this.#logStreamEnd(livedMs, end.quickEnds, delayMs)
      }
      await new Promise((r) => setTimeout(r, delayMs).unref())
    }
  }

  /** A refused stream request in words an operator acts on: a 401/403 is about the token. */
  #refusalText(r: StreamRefused): string {
    if (r.status !== 401 && r.status !== 403) return r.message
    const flag = typeof this.#o.token === 'function' ? '--control-plane-token-file' : '--control-plane-token'
    return `${r.message} (check ${flag}: ${r.status === 401 ? 'the control plane does not accept the token' : 'the token needs the proxy role, and one with a "proxy" claim acts only as that --proxy-id'})`
  }

  /**
   * The control plane ended the stream cleanly. It does so when it shuts down, and when another
   * stream opens under the same proxy id: two proxies sharing an id end each other's stream on
   * every connect, which used to be a silent reconnect storm.
   */
  #logStreamEnd(livedMs: number, quickEnds: number, retryInMs: number): void {
    const o = { proxyId: this.proxyId, livedMs, retryInMs }
    if (quickEnds === 0) this.#o.log('info', o, 'the control plane ended the config stream; reconnecting')
    else if (quickEnds === 1) this.#o.log('warn', o, 'the control plane ended the config stream soon after it opened (it restarted, or another proxy with the same proxy id took the stream over); reconnecting')
    else this.#o.log('warn', { ...o, timesInARow: quickEnds }, "the control plane keeps ending the config stream soon after it opens: another proxy is probably using the same proxy id (the control plane keeps one stream per id; each connection ends the other's) — give every proxy its own --proxy-id; backing off")
  }

  /** `event: current`: the control plane's head is not newer than the version this proxy sent. */
  async #onCurrent(data: string): Promise<void> {
    let head: number
    try {
      head = (JSON.parse(data) as { version: number }).version
    } catch {
      return
    }
    if (this.#first !== undefined && this.#version === 0) {
      // Booting (this proxy runs nothing yet) and the head is not newer than nothing: the
      // control plane has no version at all. Boot goes on at once with what else there is.
      const f = this.#first
      this.#first = undefined
      f({ kind: 'empty' })
      return
    }
    // Equal is the normal case (the running version is the head: a snapshot booted from is the
    // control plane's again). Older means the control plane's store went back (reset or restored):
    // refuse it as #onSnapshot does, visibly (NACK again on every connect, so lastNack stays true).
    if (head === this.#version) this.#handle?.confirmedByControlPlane(head)
    if (!Number.isInteger(head) || head >= this.#version) return
    await this.#refuseOlder(head, judgeVersion({ version: head }, { version: this.#version }, 'which this proxy runs'))
  }

  async #refuseOlder(version: number, j: VersionJudgement): Promise<void> {
    if (j.kind !== 'older') return
    this.#logOnce(`older:${version}`, 'warn', { version, running: this.#version, reason: j.reason }, 'config version NACKed: older than the running version; keeping the running config')
    await this.#ack(version, false, j.reason)
  }

  async #onSnapshot(data: string, key: KeyObject, eventId?: string): Promise<void> {
    let envelope: Envelope
    let payload: Payload
    try {
      envelope = JSON.parse(data) as Envelope
      payload = verifyEnvelope(envelope, key)
    } catch (err) {
      // Never applied; NACKed so the control plane shows it (a proxy refusing every push must not
      // look healthy there). Logged once per version: the head is sent again on every reconnect.
      const version = claimedVersion(data, eventId)
      const reason = (err as Error).message
      const keeping = this.#handle === undefined ? '' : ': keeping the running config'
      // Counted like a refused file (IgwConfigReloadRejected), once per version as it is logged:
      // a pushed snapshot signed by another key is what that alert is for.
      if (this.#logOnce(`refused:${version}:${reason}`, 'error', { version, error: reason, key: this.#keySource }, `snapshot refused and NACKed${keeping}`)) this.#noteRejected()
      await this.#ack(version, false, `snapshot refused: ${reason}`)
      const f = this.#first
      this.#first = undefined
      f?.({ kind: 'refused', version, reason, signature: err instanceof SignatureMismatch })
      return
    }
    if (this.#first) {
      const f = this.#first
      this.#first = undefined
      f({ kind: 'snapshot', payload, envelope })
      return
    }
    if (this.#handle === undefined) {
      this.#early = data // still starting (from the file): applied as soon as the proxy runs
      return
    }
    const j = judgeVersion(payload, { version: this.#version, digest: this.#digest }, 'which this proxy runs')
    if (j.kind === 'same') {
      // The snapshot it runs (a reconnect race: nothing to do), or the same one signed again with
      // the pinned key after the control plane's key was replaced: kept as last-known-good in
      // place of the copy the old key signed, else a restart without --control-plane-previous-keys
      // while the control plane is away refused it (exit 78). Not applied again, not ACKed.
      if (payload.digest === this.#digest) this.#handle.confirmedByControlPlane(payload.version)
      if (this.#heldByPreviousKey && payload.digest === this.#digest) {
        this.#heldByPreviousKey = false
        this.#persistOrWarn(envelope, payload.version)
        this.#o.log('info', { version: payload.version, keyId: envelope.keyId }, 'last-known-good snapshot replaced by the same version signed with the pinned control plane key')
      }
      return
    }
    if (j.kind === 'older') return this.#refuseOlder(payload.version, j)
    // Tried now: a retry waiting for it (or for an older version, which this one replaces) is not needed.
    clearTimeout(this.#retry?.timer)
    if (this.#retry?.version !== payload.version) this.#retry = undefined
    let config: GatewayConfig
    try {
      config = this.#o.toConfig(payload.document, `control plane version ${payload.version}`)
    } catch (err) {
      const msg = err instanceof ConfigError ? err.problems.join('; ') : (err as Error).message
      // Logged and counted once per version and reason, as a refused signature is: the control
      // plane sends its head again on every reconnect (its restarts, a token's expiry, a network
      // break), and each one logged the error again and counted another refused document. The
      // NACK is sent every time (GET /v1/proxies keeps showing it).
      if (this.#logOnce(invalidKey(payload.version, msg), 'error', { version: payload.version, error: msg }, 'config version NACKed: invalid here; keeping the running config')) this.#handle.noteRejected()
      await this.#ack(payload.version, false, msg)
      return
    }
    const r = await this.#handle.applyConfig(config, payload.version, 'control-plane')
    if (r.ok) {
      this.#version = payload.version
      this.#digest = payload.digest
      this.#heldByPreviousKey = false
      // The proxy runs it: ACK it whatever the disk says. A state dir that cannot be written
      // (full, read-only) used to throw out of the stream loop: no ACK, a "lost the control
      // plane" warning and a reconnect on every push, while the control plane was fine.
      clearTimeout(this.#retry?.timer) // one for an older version refused meanwhile
      this.#retry = undefined
      this.#persistOrWarn(envelope, payload.version)
      await this.#ack(payload.version, true)
    } else {
      const error = r.error ?? 'rejected by the workers'
      // A retry refused for the same reason: already NACKed and logged (the supervisor logs each try).
      if (this.#retry?.version !== payload.version || this.#retry.error !== error) {
        this.#o.log('error', { version: payload.version, error }, 'config version NACKed: workers refused it; keeping the running config')
        await this.#ack(payload.version, false, error)
      }
      this.#retryRefused(data, payload.version, error)
    }
  }

  /**
   * A version the workers could not build names something outside the document that is not on
   * this host yet: a key file, a rule pack (in Kubernetes the Secret holding it syncs on its own,
   * often after the commit). It was NACKed once and never tried again while the stream stayed up:
   * the proxy ran the old config until the next commit, though the file had long appeared. Tried
   * again like a refused file reload, until it applies or a newer version arrives.
   */
  #retryRefused(data: string, version: number, error: string): void {
    if (this.#closing) return
    clearTimeout(this.#retry?.timer)
    const delayMs = this.#retry?.version === version ? Math.min(REFUSED_RETRY_MAX_MS, this.#retry.delayMs * 2) : REFUSED_RETRY_MIN_MS
    const timer = setTimeout(() => {
      if (this.#closing || this.#key === undefined || version <= this.#version) return
      void this.#onSnapshot(data, this.#key)
    }, delayMs).unref()
    this.#retry = { version, delayMs, timer, error }
    this.#o.log('warn', { version, retryInMs: delayMs }, 'config version will be tried again: a worker could not build it (a file it names may not be there yet)')
  }
  /** The version the workers refused last, and when it is tried again. */
  #retry: { version: number; delayMs: number; timer: NodeJS.Timeout; error: string } | undefined

  /**
   * Count a refused document in igw_config_reload_failures_total. Before the proxy runs (a head
   * refused at boot: signed by another key, invalid here, failing to start) there is no registry
   * yet: counted on attach(). Those used to go uncounted — a proxy that booted from its
   * last-known-good because it refused the head showed 0, so IgwConfigReloadRejected never fired,
   * and a refusal by signature was never counted later either (logged once, counted with the log).
   */
  #noteRejected(): void {
    if (this.#handle !== undefined) this.#handle.noteRejected()
    else this.#rejectedBeforeAttach++
  }
  #rejectedBeforeAttach = 0

  /**
   * Answer a version. An answer the control plane did not take (no answer, 5xx, 401/403 while a
   * token is rotated, 408, 429) used to be logged and dropped: the stream stayed up, so
   * GET /v1/proxies showed the proxy on its previous version (or without its NACK) until the
   * stream happened to reconnect. The latest unsent ACK and NACK are kept and retried in that
   * order (an ACK first: it clears only NACKs of its version or older, which it replaces here),
   * one post at a time, so a retried answer never lands after a newer one.
   */
  #ack(version: number, ok: boolean, error?: string): Promise<void> {
    // An ACK names the document too (the version it runs may be another document than the
    // store's under that number: its own last-known-good); a NACK refuses the store's, so no digest.
    const digest = ok && version === this.#version ? this.#digest : undefined
    const a: Answer = { version, ok, ...(error ? { error } : {}), ...(digest !== undefined ? { digest } : {}) }
    if (ok) {
      this.#unsent.ack = a
      if (this.#unsent.nack !== undefined && this.#unsent.nack.version <= version) this.#unsent.nack = undefined
    } else this.#unsent.nack = a
    return this.#sendAnswers()
  }

  #sendAnswers(): Promise<void> {
    const run = this.#answering.then(() => this.#sendUnsent())
    this.#answering = run.catch(() => undefined)
    return run
  }

  async #sendUnsent(): Promise<void> {
    for (const kind of ['ack', 'nack'] as const) {
      const a = this.#unsent[kind]
      if (a === undefined) continue
      const { retryAfter, failed } = await this.#postAnswer(a)
      if (retryAfter !== undefined && !this.#closed) {
        // From this failure: a timer set by an earlier one may be sooner than the Retry-After now asked.
        clearTimeout(this.#answerTimer)
        const retryInMs = this.#answerBackoff.failed(retryAfter)
        // The delay in the line: with a Retry-After honoured it may be minutes, and "could not
        // send" alone left the operator watching for a retry that was not due yet.
        if (failed !== undefined) this.#ackFailed(a.version, a.ok, { ...failed, retryInMs })
        this.#answerTimer = setTimeout(() => {
          this.#answerTimer = undefined
          if (!this.#closed) void this.#sendAnswers()
        }, retryInMs).unref()
        return
      }
      if (failed !== undefined) this.#ackFailed(a.version, a.ok, failed)
      // Sent, or refused for good (400): done — unless a newer answer replaced it meanwhile.
      if (this.#unsent[kind] === a) this.#unsent[kind] = undefined
    }
    this.#answerBackoff.opened()
  }

  /**
   * One post of an answer: `retryAfter` undefined when done (taken, or refused for good), else the
   * Retry-After (ms, 0 for none) to retry after at the least; `failed` says why it was not taken.
   */
  async #postAnswer(a: Answer): Promise<{ retryAfter?: number | undefined; failed?: Record<string, unknown> }> {
    try {
      const r = await request(`${this.#o.url}/v1/proxies/${encodeURIComponent(this.proxyId)}/ack`, {
        method: 'POST',
        headers: { ...this.#headers(), 'content-type': 'application/json' },
        body: JSON.stringify({ version: a.version, status: a.ok ? 'ACK' : 'NACK', ...(a.error !== undefined ? { error: a.error } : {}), ...(a.digest !== undefined ? { digest: a.digest } : {}) }),
        headersTimeout: 5_000,
        bodyTimeout: 5_000,
      })
      if (r.statusCode >= 200 && r.statusCode < 300) {
        await r.body.dump()
        return {}
      }
      // Refused (a token without the proxy role, rotated to a wrong one; the control plane
      // failing): the answer was thrown away unread, so GET /v1/proxies went on showing the old
      // version or no NACK, and nothing on the proxy said why.
      const detail = (await r.body.text()).slice(0, 300)
      const failed = { status: r.statusCode, detail }
      return RETRIED_STATUSES.has(r.statusCode) || r.statusCode >= 500 ? { retryAfter: retryAfterMs(r.headers['retry-after']), failed } : { failed }
    } catch (err) {
      return { retryAfter: 0, failed: { error: (err as Error).message } }
    }
  }
  /** The latest ACK and NACK not taken by the control plane yet. */
  readonly #unsent: { ack?: Answer | undefined; nack?: Answer | undefined } = {}
  #answering: Promise<void> = Promise.resolve()
  #answerTimer: NodeJS.Timeout | undefined
  /** ACK/NACK retry delays: the stream's policy (equal jitter, Retry-After with its cap), 1 s → 30 s. */
  readonly #answerBackoff = new ReconnectPolicy({ baseMs: ANSWER_RETRY_MIN_MS, failureCapMs: ANSWER_RETRY_MAX_MS })

  /** Once a minute (a control plane refusing every ACK would otherwise log one per version and reconnect); the count of those held back rides along. */
  #ackFailed(version: number, ok: boolean, why: Record<string, unknown>): void {
    const held = this.#ackLog.take()
    if (held === undefined) return
    this.#o.log('warn', { version, answer: ok ? 'ACK' : 'NACK', ...why, ...(held > 0 ? { alsoFailedSinceLastLogged: held } : {}) }, 'could not send ACK/NACK to the control plane (GET /v1/proxies does not show this answer)')
  }
  readonly #ackLog = new LogWindow(60_000)
  /** Failed connection attempts since the stream was last open (after boot), and their log window. */
  #retryFailures = 0
  readonly #retryLog = new LogWindow(60_000)

  /** Keep a running snapshot as last-known-good; a failed write is logged (the previous file stays). */
  #persistOrWarn(envelope: Envelope, version: number): void {
    try {
      this.#persist(envelope)
    } catch (err) {
      this.#o.log('error', { path: this.lastGoodPath, version, error: (err as Error).message }, 'could not write the last-known-good snapshot')
    }
  }

  /**
   * The proxy is listening with the boot version: keep the control plane's head as last-known-good,
   * and ACK the version it runs. A fallback to the last-known-good (the head NACKed) is ACKed too,
   * as xDS reports the version it runs beside a NACK: GET /v1/proxies showed the version of the
   * proxy's earlier life (or none for a new one) until the next commit. Not when the control plane
   * did not answer: the stream it opens later says the version, and the ACK would only be retried.
   */
  async ackBoot(): Promise<void> {
    if (this.#bootEnvelope !== undefined) this.#persistOrWarn(this.#bootEnvelope, this.#version)
    this.#bootEnvelope = undefined
    if (this.#bootAnswered && this.#version > 0) await this.#ack(this.#version, true)
  }
  #bootAnswered = false

  /**
   * The control plane's head validated but the proxy could not start with it: NACK it and fall
   * back as bootstrap() does for a head that does not validate — to the last good snapshot.
   */
  async rejectBoot(error: string): Promise<{ config: GatewayConfig; version: number } | undefined> {
    const head = this.#bootEnvelope
    this.#bootEnvelope = undefined
    this.#bootProblem = `its head (version ${this.#version}) failed to start here: ${error}`
    this.#noteRejected()
    await this.#ack(this.#version, false, error)
    if (head !== undefined) this.#retryRefused(JSON.stringify(head), this.#version, error)
    this.#version = 0
    this.#digest = undefined
    return this.#bootFromLastGood('control plane head failed to start here')
  }
  #bootEnvelope: Envelope | undefined = undefined

  /** Collect and post usage; failed reports are kept (bounded) and retried in order. */
  /**
   * Collect and post usage, one run at a time: the interval's tick while a slow POST is still in
   * flight (or close() meanwhile) joins the run in flight instead of starting a second loop over
   * the same pending list — two loops posted one report twice and could shift() a report neither
   * had sent. `flushUsage` waits for the run in flight and then collects again.
   */
  reportUsage(): Promise<void> {
    if (this.#reporting !== undefined) return this.#reporting
    const run = this.#reportOnce().finally(() => {
      if (this.#reporting === run) this.#reporting = undefined
    })
    this.#reporting = run
    return run
  }
  #reporting: Promise<void> | undefined = undefined

  /** The run in flight, then a fresh collection and post (close, and after the drain). */
  async flushUsage(): Promise<void> {
    await this.#reporting?.catch(() => undefined)
    return this.reportUsage()
  }

  async #reportOnce(): Promise<void> {
    if (this.#handle === undefined) return
    const tenants = await this.#handle.collectUsage()
    if (Object.keys(tenants).length > 0) {
      this.#pending.push({ bootId: this.bootId, seq: ++this.#seq, at: new Date().toISOString(), tenants })
      if (this.#closing) this.#keepUnsentUsage()
    }
    if (this.#pending.length > MAX_PENDING_REPORTS) {
      // Bounded (~1 h at 5 s): the oldest go, and the operator is told (they were dropped unsaid).
      const dropped = this.#pending.splice(0, this.#pending.length - MAX_PENDING_REPORTS)
      this.#droppedReports += dropped.length
      const held = this.#dropLog.take()
      if (held !== undefined) {
        this.#o.log('error', { dropped: this.#droppedReports, kept: MAX_PENDING_REPORTS, oldestKept: this.#pending[0]?.at }, 'usage reports dropped: the control plane has not accepted reports for too long; their counts are lost to statements and alerts')
        this.#droppedReports = 0
      }
    }
    try {
      await this.#postPending()
    } finally {
      this.#keepUnsentUsage()
    }
  }

  /** Post the pending reports in order; stops at the first not taken (kept for the next run). */
  async #postPending(): Promise<void> {
    while (this.#pending.length > 0) {
      const rep = this.#pending[0]!
      try {
        const r = await request(`${this.#o.url}/v1/usage`, {
          method: 'POST',
          headers: { ...this.#headers(), 'content-type': 'application/json' },
          body: JSON.stringify({ proxyId: this.proxyId, bootId: rep.bootId, seq: rep.seq, at: rep.at, tenants: rep.tenants }),
          headersTimeout: 5_000,
          bodyTimeout: 5_000,
        })
        const status = r.statusCode
        if (status >= 200 && status < 300) {
          await r.body.dump()
          this.#pending.shift() // counted (or a duplicate)
          continue
        }
        const detail = (await r.body.text()).slice(0, 512)
        // A redirect (an ingress sending http:// on to https://, a moved URL) is not followed: the
        // report was not counted. Taken as delivered, every report was lost without a word.
        if (status < 400) {
          if (this.#usageLog.take() !== undefined) this.#o.log('warn', { status, location: r.headers.location, pending: this.#pending.length }, 'usage report answered with a redirect, not counted: check --control-plane (its scheme, host and path); kept and retried')
          return
        }
        // Kept for the next run: the control plane may answer again (5xx), the token may be
        // rotated (401/403: a Secret being replaced, a role being fixed), or it asks to wait.
        // Dropping them lost every report of a rotation window.
        // Logged once a minute whatever the status: a control plane answering 503 for an hour
        // (its database down) went unsaid until reports started being dropped.
        if (status >= 500 || RETRIED_STATUSES.has(status)) {
          if (this.#usageLog.take() !== undefined) this.#o.log('warn', { status, detail, pending: this.#pending.length }, 'usage report refused by the control plane; kept and retried')
          return
        }
        // Any other 4xx will never succeed: dropped, and said so.
        this.#o.log('error', { status, detail, seq: rep.seq }, 'usage report refused by the control plane as malformed; dropped')
        this.#pending.shift()
      } catch (err) {
        // No answer (the control plane down or unreachable): kept for the next run, as before, and now said.
        if (this.#usageLog.take() !== undefined) this.#o.log('warn', { error: (err as Error).message, pending: this.#pending.length }, 'usage report not delivered: the control plane did not answer; kept and retried')
        return
      }
    }
  }
  #droppedReports = 0
  readonly #usageLog = new LogWindow(60_000)
  readonly #dropLog = new LogWindow(60_000)

  async close(): Promise<void> {
    if (this.#closed) return
    clearInterval(this.#usageTimer)
    clearTimeout(this.#answerTimer)
    clearTimeout(this.#retry?.timer)
    // On disk before the flush: the shutdown may not wait for it (bounded here and in the CLI).
    this.#closing = true
    this.#keepUnsentUsage()
    // Bounded: the shutdown (the drain that follows) used to wait for this report as long as the
    // control plane took to not answer — 5 s for a hung one, 10 s (the connect timeout) for one
    // behind a dead network path — while the proxy went on taking requests after SIGTERM. A
    // report still in flight is awaited again, bounded, after the drain (flushUsage).
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.flushUsage().catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, CLOSE_FLUSH_MS)))])
    clearTimeout(timer)
    this.#closed = true
    this.#abort.abort()
  }
}

/** Run `igw proxy` with a control plane (see the module comment for the boot order). */
export async function startProxyFromControlPlane(opts: ControlPlaneClientOptions, fallback: (() => GatewayConfig) | undefined, start: (config: GatewayConfig, version: number, source: ConfigSource) => Promise<ProxyHandle>): Promise<{ handle: ProxyHandle; client: ControlPlaneClient }> {
  const client = new ControlPlaneClient(opts)
  const boot = await client.bootstrap()
  let handle: ProxyHandle | undefined
  if (boot !== undefined) {
    try {
      handle = await start(boot.config, boot.version, boot.source)
      opts.log('info', { version: boot.version, source: boot.source }, boot.source === 'control-plane' ? 'config from the control plane' : 'config from the last-known-good snapshot')
      await client.ackBoot()
    } catch (err) {
      if (handle !== undefined || boot.source !== 'control-plane') throw err
      // Valid by schema, but it does not start here (a JWKS or keyring file it names is missing,
      // a port is taken): NACK it and go on as if the control plane had not answered.
      const message = (err as Error).message
      opts.log('error', { version: boot.version, error: message }, 'control plane head failed to start here; NACKed, falling back')
      const lkg = await client.rejectBoot(message)
      if (lkg !== undefined) {
        handle = await start(lkg.config, lkg.version, 'last-known-good')
        await client.ackBoot()
      } else if (fallback === undefined) {
        await client.close()
        throw err
      }
    }
  }
  if (handle === undefined && fallback !== undefined) {
    opts.log('warn', {}, 'no control plane config: starting from --config/--upstream until it answers')
    handle = await start(fallback(), 0, 'fallback')
  }
  if (handle === undefined) {
    await client.close()
    const what = client.bootProblem === undefined ? `the control plane at ${opts.url} did not answer` : `the control plane at ${opts.url} answered, but ${client.bootProblem}`
    throw new ConfigError('igw proxy', [`no config: ${what}; and there is no usable last-known-good snapshot in ${opts.stateDir} (see the lines above)`])
  }
  client.attach(handle)
  return { handle, client }
}

export { validateConfig }

/** A token's claims, read, not verified (the control plane checks the token); undefined for an opaque token. */
function unverifiedClaims(token: string): JWTPayload | undefined {
  try {
    return decodeJwt(token.trim())
  } catch {
    return undefined
  }
}

/** A JWT's `exp` in epoch ms (it only explains a stream's end); undefined otherwise. */
function tokenExpiry(token: string): number | undefined {
  const exp = unverifiedClaims(token)?.exp
  return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined
}

/**
 * The proxy id a token is bound to (its `proxy` claim: the control plane refuses any other id
 * with 403), when it is a JWT naming one the control plane admits; undefined otherwise. Read, not
 * verified: it only picks the default id, and the control plane checks the token itself.
 */
function boundProxyId(token: string | (() => string)): string | undefined {
  let claim: unknown
  try {
    claim = unverifiedClaims(typeof token === 'function' ? token() : token)?.proxy
  } catch {
    return undefined // a token file not readable yet: no binding to read
  }
  return typeof claim === 'string' && PROXY_ID.test(claim) ? claim : undefined
}
