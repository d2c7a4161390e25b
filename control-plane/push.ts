// Config push over Server-Sent Events. A proxy opens GET /v1/stream (its id, its boot id and the
// version it runs); if the head is newer it gets the signed snapshot at once, then every later
// version as it is committed. It answers each with POST /v1/proxies/{id}/ack (ACK or NACK with
// the error), like xDS's ACK/NACK but over plain HTTP. The event text is built once per version
// and written to every stream, so fan-out is one write per proxy.
//
// A proxy that stops reading (stopped process, dead network path) must not make the control plane
// buffer every later snapshot for it: while a stream's buffer has not drained, newer versions are
// not queued behind it — only the newest waits, and is written when the buffer drains (a proxy
// only needs the head; older versions are skipped anyway). A stream of which nothing has been
// taken for `stallMs` is closed, logged and counted; the proxy reconnects with its version and gets
// the head. A slow link still taking a multi-MB snapshot is not stalled, however long it has not
// drained: closed, it would be sent the whole snapshot again and cut at the same point, forever.
//
// A stream is authorized once, when it opens; it ends when its token stops being accepted, as an
// xDS server ends a stream whose credentials expired: the proxy reconnects with its current token
// (a rotated token file), and a token that was retired or not renewed no longer gets config.
import type { ServerResponse } from 'node:http'
import { num, type Db } from './db.ts'
import type { Head } from './store.ts'

export interface ProxyView {
  id: string
  hostname: string | null
  connected: boolean
  firstSeen: string
  lastSeen: string
  appliedVersion: number | null
  ackedAt: string | null
  lastNack: { version: number; error: string; at: string } | null
}

interface Stream {
  res: ServerResponse
  proxyId: string
  sentVersion: number
  /** The buffer is above its high-water mark: nothing more is written until 'drain'. */
  blocked: boolean
  blockedSince: number
  /** The newest version that arrived while blocked (older ones are dropped: the proxy wants the head). */
  pending: Head | undefined
  /** Ends the stream when its token expires. */
  expiry: NodeJS.Timeout | undefined
}

const HEARTBEAT_MS = 15_000
/**
 * A proxy whose stream another control plane instance holds is shown connected while that
 * instance keeps its row fresh: every heartbeat writes `last_seen` (and `connected`) for the
 * streams it holds. Three missed heartbeats (the instance died without closing its rows) and the
 * row no longer counts as connected.
 */
const CONNECTED_FRESH_MS = 3 * HEARTBEAT_MS
/** Ids per UPDATE of the heartbeat's touch (well under SQLite's and PostgreSQL's parameter limits). */
const TOUCH_BATCH = 500
/** How long a stream may go without the proxy taking any of it before it is closed. */
const DEFAULT_STALL_MS = 60_000
/** setTimeout's longest delay (about 24.8 days); a later expiry is reached in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1

export function snapshotEvent(head: Head): string {
  return `id: ${head.version}\nevent: snapshot\ndata: ${JSON.stringify(head.envelope)}\n\n`
}

/** What the hub reports as it works (metrics); all optional. */
export interface PushHubEvents {
  onPush?(): void
  /** A proxy answered a version (a NACK with its error text: the control plane logs it, as GET /v1/proxies shows it only until it is resolved). */
  onAck?(ok: boolean, info: { proxyId: string; version: number; error?: string }): void
  /** A stream was closed because its proxy stopped reading it. */
  onStalled?(proxyId: string, bufferedBytes: number, stalledMs: number): void
  /**
   * A stream was ended because the token that opened it is no longer accepted (`endsAt`). A fleet
   * sharing one token reconnects all at once then: without this, nothing on the control plane
   * said why.
   */
  onExpired?(proxyId: string, endsAt: number): void
  /**
   * A proxy connected saying it runs version `version` of a document whose digest is not this
   * store's version `version` (the store was reset or restored, then committed up to that number
   * again with other content): it is sent the head rather than told it is current.
   */
  onDigestMismatch?(info: { proxyId: string; version: number; proxyDigest: string; storeDigest: string | undefined }): void
}

export interface PushHubOptions {
  /** Close a blocked stream of which nothing has been taken for this long (default 60 s). */
  stallMs?: number
  /** How often streams get a keep-alive comment and their rows a `last_seen` refresh (default 15 s; tests shorten it). */
  heartbeatMs?: number
}

export class PushHub {
  readonly #db: Db
  readonly #events: PushHubEvents
  readonly #streams = new Map<string, Stream>()
  readonly #heartbeat: NodeJS.Timeout
  readonly #stallMs: number
  #lastEvent: { version: number; digest: string; text: string } | undefined

  constructor(db: Db, events: PushHubEvents = {}, opts: PushHubOptions = {}) {
    this.#db = db
    this.#events = events
    this.#stallMs = opts.stallMs ?? DEFAULT_STALL_MS
    // Comments keep idle connections open through proxies and let both sides notice a dead peer.
    this.#heartbeat = setInterval(() => {
      for (const s of this.#streams.values()) if (!s.blocked) this.#write(s, ': ping\n\n')
      void this.#touch().catch(() => undefined)
    }, opts.heartbeatMs ?? HEARTBEAT_MS)
    this.#heartbeat.unref()
  }

  get connected(): number {
    return this.#streams.size
  }

  /** Bytes written to streams that their proxies have not read yet. */
  get bufferedBytes(): number {
    let n = 0
    for (const s of this.#streams.values()) n += s.res.writableLength
    return n
  }

  /**
   * `currentHead` is read once the stream is registered, so a commit during the open is not missed.
   * `endsAt` (epoch ms): when the token that opened it is no longer accepted; the stream ends then.
   */
  /**
   * `pinnedKey`: the `key` of GET /v1/stream, the id of the key the proxy is pinned to, sent only
   * when the snapshot it runs is signed by another (replaced) key.
   */
  async open(res: ServerResponse, proxyId: string, hostname: string | undefined, bootId: string | undefined, runningVersion: number, currentHead: () => Head | undefined, runningDigest?: string, endsAt?: number, pinnedKey?: string): Promise<void> {
    // The row first, before any byte of the answer: a database that fails here is an error
    // status the proxy retries, not a 200 whose stream then breaks.
    // The version it says it runs replaces the row's, 0 (none: booting, or on its --config/--upstream
    // fallback) too: kept, a proxy restarted on its fallback showed the version of its earlier life.
    await this.#db.query(
      'INSERT INTO proxies (id, hostname, boot_id, first_seen, last_seen, connected, applied_version) VALUES ($1, $2, $3, $4, $4, 1, $5) ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, last_seen = excluded.last_seen, connected = 1, applied_version = excluded.applied_version, acked_at = CASE WHEN excluded.applied_version IS NULL THEN NULL ELSE proxies.acked_at END',
      [proxyId, hostname ?? null, bootId ?? null, Date.now(), runningVersion > 0 ? runningVersion : null],
    )
    // A proxy reconnecting with a version of this store at or past its NACKed one runs it: the
    // NACK is resolved as an ACK would (the ACK itself may have been lost: it is not retried, and
    // a proxy already on the head gets no new version to ACK).
    // With the digest it sends (older proxies send none), a proxy runs a version of THIS store only
    // if the document is the same: a store reset or restored and committed again up to the fleet's
    // version number holds another document under that number.
    const stored = runningVersion > 0 ? (await this.#db.query<{ digest: string }>('SELECT digest FROM config_versions WHERE version = $1', [runningVersion]))[0] : undefined
    const otherDocument = runningDigest !== undefined && stored !== undefined && stored.digest !== runningDigest
    const known = stored !== undefined && !otherDocument
    if (known) {
      await this.#db.query('UPDATE proxies SET nack_version = NULL, nack_error = NULL, nack_at = NULL WHERE id = $1 AND nack_version <= $2', [proxyId, runningVersion])
    }
    if (res.socket === null || res.socket.destroyed) {
      // The proxy left while we wrote the row: no stream (and no close handler) will ever mark it
      // disconnected, so do it now — unless another stream of it is held here — or every
      // instance shows it connected until the row goes stale (45 s).
      if (!this.#streams.has(proxyId)) await this.#db.query('UPDATE proxies SET connected = 0, last_seen = $2 WHERE id = $1', [proxyId, Date.now()]).catch(() => undefined)
      return
    }
    const old = this.#streams.get(proxyId)
    // A reconnect replaces the previous stream of the same proxy (destroyed when it is not
    // draining: end() would wait for a reader that has gone).
    if (old) {
      if (old.blocked) old.res.destroy()
      else old.res.end()
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.flushHeaders()
    const head = currentHead()
    // This instance may not have heard of the newest commits yet (another instance on the same
    // database made them; its NOTIFY or the head poll has not arrived): a proxy running a version
    // the store has is not ahead of it. Answered with the stale head, it NACKed that head as "older
    // than the running version (was the store reset or restored?)", a false alarm in its log and
    // in GET /v1/proxies. It is told it is current; the next commit reaches it as usual.
    const lagging = known && (head?.version ?? 0) < runningVersion
    // A proxy ahead of this store (its history was reset, or restored from an older backup)
    // still hears every new commit: it NACKs each one at once (versions only move forward on a
    // proxy) and GET /v1/proxies shows why, instead of the commit passing it by in silence.
    const s: Stream = { res, proxyId, sentVersion: lagging ? runningVersion : Math.min(runningVersion, head?.version ?? 0), blocked: false, blockedSince: 0, pending: undefined, expiry: undefined }
    this.#streams.set(proxyId, s)
    // The socket's idle timer, not one of ours: Node counts every write, and every part of a
    // pending write the kernel takes, as activity — progress that a 'drain' only reports once the
    // whole snapshot is out. It fires on idle streams too (heartbeats longer than stallMs): ignored
    // unless the stream is blocked.
    res.setTimeout(this.#stallMs, () => this.#stalled(s))
    if (endsAt !== undefined) this.#expireAt(s, endsAt)
    res.on('close', () => {
      clearTimeout(s.expiry)
      this.#forget(s)
    })
    if (head !== undefined && head.version > runningVersion) this.#send(s, head)
    else if (known && head !== undefined && head.version === runningVersion && head.digest === runningDigest && pinnedKey !== undefined && head.envelope.keyId === pinnedKey) {
      // The proxy runs this version from a last-known-good the replaced key signed, and is pinned
      // to the key the head is signed with now (control plane started with --previous-keys): it is
      // sent the head, which it keeps as last-known-good (not applied, not ACKed). Told `current`,
      // it kept the old key's copy, and restarted later without --control-plane-previous-keys
      // while the control plane was away, it refused that copy and exited 78.
      this.#send(s, head)
    }
    else if (otherDocument && head !== undefined && head.version === runningVersion && head.digest !== runningDigest) {
      // Same number, another document: "current" would leave the proxy on its own version N while
      // this store's N differs, unnoticed. It is sent the head, which it refuses visibly (NACK:
      // versions only move forward, "another document than version N") until a commit passes N.
      this.#events.onDigestMismatch?.({ proxyId, version: runningVersion, proxyDigest: runningDigest!, storeDigest: head.digest })
      this.#send(s, head)
    } else this.#write(s, `event: current\ndata: {"version":${lagging ? runningVersion : (head?.version ?? 0)}}\n\n`)
  }

  #send(s: Stream, head: Head): void {
    if (s.blocked) {
      // Coalesce: the proxy has not taken what it was sent; it gets only the newest version next.
      if (head.version > (s.pending?.version ?? 0)) s.pending = head
      return
    }
    // Keyed by digest too: a store that went back holds another document under a number already sent.
    if (this.#lastEvent?.version !== head.version || this.#lastEvent.digest !== head.digest) this.#lastEvent = { version: head.version, digest: head.digest, text: snapshotEvent(head) }
    s.sentVersion = head.version
    s.pending = undefined
    this.#events.onPush?.()
    this.#write(s, this.#lastEvent.text)
  }

  #write(s: Stream, text: string): void {
    if (s.res.write(text)) return
    s.blocked = true
    s.blockedSince = Date.now()
    s.res.once('drain', () => {
      s.blocked = false
      const next = s.pending
      s.pending = undefined
      if (next !== undefined && next.version > s.sentVersion && this.#streams.get(s.proxyId) === s) this.#send(s, next)
    })
  }

  /** The stream is over: no longer held here, and its row shows the proxy disconnected (unless a newer stream of it took its place). */
  #forget(s: Stream): void {
    if (this.#streams.get(s.proxyId) !== s) return
    this.#streams.delete(s.proxyId)
    void this.#db.query('UPDATE proxies SET connected = 0, last_seen = $2 WHERE id = $1', [s.proxyId, Date.now()]).catch(() => undefined)
  }

  #expireAt(s: Stream, at: number): void {
    const ms = at - Date.now()
    s.expiry = setTimeout(() => (ms > MAX_TIMER_MS ? this.#expireAt(s, at) : this.#expired(s, at)), Math.max(0, Math.min(ms, MAX_TIMER_MS)))
    s.expiry.unref()
  }

  /** The token expired: a clean end, which the proxy answers by reconnecting with its current token. */
  #expired(s: Stream, endsAt: number): void {
    if (this.#streams.get(s.proxyId) !== s) return
    // Forgotten now, not at 'close': nothing more may be written to an ended response.
    this.#forget(s)
    this.#events.onExpired?.(s.proxyId, endsAt)
    // A blocked stream's end() would wait for a reader that is not reading.
    if (s.blocked) s.res.destroy()
    else s.res.end(': token expired: reconnect with a current token\n\n')
  }

  #stalled(s: Stream): void {
    if (this.#streams.get(s.proxyId) !== s || !s.blocked) return
    this.#events.onStalled?.(s.proxyId, s.res.writableLength, Date.now() - s.blockedSince)
    // Not end(): that waits for the buffer to drain, which is what is not happening.
    s.res.destroy()
  }

  /**
   * Mark the streams this instance holds as connected and seen now, so that GET /v1/proxies on
   * any instance sharing the database shows them connected (the in-memory streams are only this
   * instance's). Also puts back `connected` when another instance, seeing a proxy's old stream
   * close after the proxy had reconnected here, cleared it.
   *
   * A stream may close while a touch is on its way to the database; its `connected = 0` (stamped
   * after `now`) may then land first. The touch must not undo it — the proxy would show connected
   * on every instance for up to 45 s after it left — so each batch takes only the streams still
   * held when it is sent, and its UPDATE skips a row marked disconnected at or after `now`.
   */
  async #touch(): Promise<void> {
    const now = Date.now()
    let ids = [...this.#streams.keys()]
    while (ids.length > 0) {
      const batch = ids.slice(0, TOUCH_BATCH).filter((id) => this.#streams.has(id))
      ids = ids.slice(TOUCH_BATCH)
      if (batch.length === 0) continue
      await this.#db.query(`UPDATE proxies SET last_seen = $1, connected = 1 WHERE id IN (${batch.map((_id, j) => `$${j + 2}`).join(', ')}) AND NOT (connected = 0 AND last_seen >= $1)`, [now, ...batch])
    }
  }

  /** A new version was committed: send it to every connected proxy. */
  publish(head: Head): void {
    for (const s of this.#streams.values()) if (s.sentVersion < head.version) this.#send(s, head)
  }

  /**
   * The store went back under this instance (restored, failed over): every stream that was sent a
   * version at or past the new head gets the head, as a proxy reconnecting would — its proxy
   * refuses it visibly (NACK: older, or another document) instead of hearing nothing until the
   * store's versions pass the number it was last sent — and later commits reach it as usual.
   */
  rewound(head: Head): void {
    for (const s of this.#streams.values()) {
      if (s.sentVersion < head.version) continue
      if (s.blocked) {
        // Written when the buffer drains (the drain handler compares with sentVersion).
        s.pending = head
        s.sentVersion = head.version - 1
      } else this.#send(s, head)
    }
  }

  /**
   * Record an ACK or a NACK. An ACK of the NACKed version or a later one of this store resolves the
   * NACK: the proxy runs a version at least as new as the one it refused, so `lastNack` goes back
   * to null (as Envoy's client status drops its error state on the next accepted update) —
   * otherwise "proxies with a NACK" would count it forever. Each NACK is reported to `onAck` with
   * its error (the control plane logs it, so it outlives the row). Left in place: the NACK after
   * an ACK of an older version (a proxy that came back with its last-known-good), and after an ACK
   * of a version this store does not have — a proxy ahead of a store that went back (reset,
   * restored) ACKs the version it boots with (625) and keeps refusing the head (2): still a NACK.
   */
  async ack(proxyId: string, version: number, ok: boolean, error: string | undefined, digest?: string): Promise<boolean> {
    const now = Date.now()
    if (ok) {
      // With a digest (newer proxies), an ACK of version N is one of this store's only if the
      // document matches: a proxy that booted from its own last-known-good N, refusing this store's
      // other N, ACKs its N — that must not clear the NACK of ours.
      const row = (await this.#db.query<{ digest: string }>('SELECT digest FROM config_versions WHERE version = $1', [version]))[0]
      const ours = row !== undefined && (digest === undefined || row.digest === digest)
      // One statement: a NACK recorded meanwhile is either cleared whole or kept whole.
      const rows = await this.#db.query(
        ours
          ? 'UPDATE proxies SET applied_version = $2, acked_at = $3, last_seen = $3, nack_version = CASE WHEN nack_version <= $2 THEN NULL ELSE nack_version END, nack_error = CASE WHEN nack_version <= $2 THEN NULL ELSE nack_error END, nack_at = CASE WHEN nack_version <= $2 THEN NULL ELSE nack_at END WHERE id = $1 RETURNING id'
          : 'UPDATE proxies SET applied_version = $2, acked_at = $3, last_seen = $3 WHERE id = $1 RETURNING id',
        [proxyId, version, now],
      )
      if (rows.length === 0) return false
      this.#events.onAck?.(true, { proxyId, version })
      return true
    }
    // A NACK's error text is the proxy's own message, kept (NUL made visible) rather than refused.
    const text = (error ?? 'rejected').slice(0, 4000).replaceAll('\u0000', '\ufffd')
    const rows = await this.#db.query('UPDATE proxies SET nack_version = $2, nack_error = $3, nack_at = $4, last_seen = $4 WHERE id = $1 RETURNING id', [proxyId, version, text, now])
    if (rows.length === 0) return false
    this.#events.onAck?.(false, { proxyId, version, error: text })
    return true
  }

  /**
   * Proxies by id, a page at a time when asked: `after` (exclusive) and `limit` are applied in SQL,
   * so a page reads only its own rows. The order is by code unit (bytes, ids being ASCII), not
   * the database's collation: a PostgreSQL created with a locale orders "a-b" and "a_b" its own
   * way, and a cursor compared in another order than the one paged by skips or repeats rows.
   * SQLite's default BINARY collation already compares bytes.
   */
  async list(opts: { after?: string; limit?: number } = {}): Promise<ProxyView[]> {
    const byBytes = this.#db.kind === 'postgres' ? ' COLLATE "C"' : ''
    const params: (string | number)[] = []
    let sql = 'SELECT * FROM proxies'
    if (opts.after !== undefined) {
      params.push(opts.after)
      sql += ` WHERE id${byBytes} > $${params.length}`
    }
    sql += ` ORDER BY id${byBytes}`
    if (opts.limit !== undefined) {
      params.push(Math.max(0, Math.floor(opts.limit)))
      sql += ` LIMIT $${params.length}`
    }
    const rows = await this.#db.query<Record<string, unknown>>(sql, params)
    const iso = (v: unknown) => (v === null || v === undefined ? null : new Date(num(v)).toISOString())
    const fresh = Date.now() - CONNECTED_FRESH_MS
    return rows.map((r) => ({
      id: r.id as string,
      hostname: (r.hostname as string | null) ?? null,
      // Held here, or by another instance on the same database that keeps the row fresh.
      connected: this.#streams.has(r.id as string) || (num(r.connected) === 1 && num(r.last_seen) >= fresh),
      firstSeen: iso(r.first_seen)!,
      lastSeen: iso(r.last_seen)!,
      appliedVersion: r.applied_version === null ? null : num(r.applied_version),
      ackedAt: iso(r.acked_at),
      lastNack: r.nack_version === null ? null : { version: num(r.nack_version), error: r.nack_error as string, at: iso(r.nack_at)! },
    }))
  }

  /**
   * Ends every stream; their rows are marked disconnected (other instances would show them
   * connected until they went stale). Each is told first (`event: shutdown`): the whole fleet
   * loses its stream at this instant, and a proxy that knows it spreads its reconnect (a quick
   * one would bring every proxy down on the remaining instances at once). Older proxies ignore it.
   */
  async close(): Promise<void> {
    clearInterval(this.#heartbeat)
    const ids = [...this.#streams.keys()]
    for (const s of this.#streams.values()) {
      clearTimeout(s.expiry)
      // A blocked stream's end() would wait for a reader that is not reading.
      if (s.blocked) s.res.destroy()
      else s.res.end('event: shutdown\ndata: {}\n\n')
    }
    this.#streams.clear()
    const now = Date.now()
    for (let i = 0; i < ids.length; i += TOUCH_BATCH) {
      const batch = ids.slice(i, i + TOUCH_BATCH)
      await this.#db.query(`UPDATE proxies SET connected = 0, last_seen = $1 WHERE id IN (${batch.map((_id, j) => `$${j + 2}`).join(', ')})`, [now, ...batch]).catch(() => undefined)
    }
  }
}
