// Config push over Server-Sent Events. A proxy opens GET /v1/stream (its id, its boot id and the
// version it runs); if the head is newer it gets the signed snapshot at once, then every later
// version as it is committed. It answers each with POST /v1/proxies/{id}/ack (ACK or NACK with
// the error), like xDS's ACK/NACK but over plain HTTP. The event text is built once per version
// and written to every stream, so fan-out is one write per proxy.
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
}

const HEARTBEAT_MS = 15_000

export function snapshotEvent(head: Head): string {
  return `id: ${head.version}\nevent: snapshot\ndata: ${JSON.stringify(head.envelope)}\n\n`
}

/** What the hub reports as it works (metrics); all optional. */
export interface PushHubEvents {
  onPush?(): void
  onAck?(ok: boolean): void
}

export class PushHub {
  readonly #db: Db
  readonly #events: PushHubEvents
  readonly #streams = new Map<string, Stream>()
  readonly #heartbeat: NodeJS.Timeout
  #lastEvent: { version: number; text: string } | undefined

  constructor(db: Db, events: PushHubEvents = {}) {
    this.#db = db
    this.#events = events
    // Comments keep idle connections open through proxies and let both sides notice a dead peer.
    this.#heartbeat = setInterval(() => {
      for (const s of this.#streams.values()) s.res.write(': ping\n\n')
    }, HEARTBEAT_MS)
    this.#heartbeat.unref()
  }

  get connected(): number {
    return this.#streams.size
  }

  async open(res: ServerResponse, proxyId: string, hostname: string | undefined, bootId: string | undefined, runningVersion: number, head: Head | undefined): Promise<void> {
    const old = this.#streams.get(proxyId)
    if (old) old.res.end() // a reconnect replaces the previous stream of the same proxy
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.flushHeaders()
    const s: Stream = { res, proxyId, sentVersion: runningVersion }
    this.#streams.set(proxyId, s)
    res.on('close', () => {
      if (this.#streams.get(proxyId) === s) {
        this.#streams.delete(proxyId)
        void this.#db.query('UPDATE proxies SET connected = 0, last_seen = $2 WHERE id = $1', [proxyId, Date.now()]).catch(() => undefined)
      }
    })
    const now = Date.now()
    await this.#db.query(
      'INSERT INTO proxies (id, hostname, boot_id, first_seen, last_seen, connected, applied_version) VALUES ($1, $2, $3, $4, $4, 1, $5) ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, last_seen = excluded.last_seen, connected = 1, applied_version = COALESCE(excluded.applied_version, proxies.applied_version)',
      [proxyId, hostname ?? null, bootId ?? null, now, runningVersion > 0 ? runningVersion : null],
    )
    if (head !== undefined && head.version > runningVersion) this.#send(s, head)
    else res.write(`event: current\ndata: {"version":${head?.version ?? 0}}\n\n`)
  }

  #send(s: Stream, head: Head): void {
    if (this.#lastEvent?.version !== head.version) this.#lastEvent = { version: head.version, text: snapshotEvent(head) }
    s.res.write(this.#lastEvent.text)
    s.sentVersion = head.version
    this.#events.onPush?.()
  }

  /** A new version was committed: send it to every connected proxy. */
  publish(head: Head): void {
    for (const s of this.#streams.values()) if (s.sentVersion < head.version) this.#send(s, head)
  }

  async ack(proxyId: string, version: number, ok: boolean, error: string | undefined): Promise<boolean> {
    const now = Date.now()
    const rows = ok
      ? await this.#db.query('UPDATE proxies SET applied_version = $2, acked_at = $3, last_seen = $3 WHERE id = $1 RETURNING id', [proxyId, version, now])
      : // A NACK's error text is the proxy's own message, kept (NUL made visible) rather than refused.
        await this.#db.query('UPDATE proxies SET nack_version = $2, nack_error = $3, nack_at = $4, last_seen = $4 WHERE id = $1 RETURNING id', [proxyId, version, (error ?? 'rejected').slice(0, 4000).replaceAll('\u0000', '\ufffd'), now])
    if (rows.length > 0) this.#events.onAck?.(ok)
    return rows.length > 0
  }

  async list(): Promise<ProxyView[]> {
    const rows = await this.#db.query<Record<string, unknown>>('SELECT * FROM proxies ORDER BY id')
    const iso = (v: unknown) => (v === null || v === undefined ? null : new Date(num(v)).toISOString())
    return rows.map((r) => ({
      id: r.id as string,
      hostname: (r.hostname as string | null) ?? null,
      connected: this.#streams.has(r.id as string),
      firstSeen: iso(r.first_seen)!,
      lastSeen: iso(r.last_seen)!,
      appliedVersion: r.applied_version === null ? null : num(r.applied_version),
      ackedAt: iso(r.acked_at),
      lastNack: r.nack_version === null ? null : { version: num(r.nack_version), error: r.nack_error as string, at: iso(r.nack_at)! },
    }))
  }

  close(): void {
    clearInterval(this.#heartbeat)
    for (const s of this.#streams.values()) s.res.end()
    this.#streams.clear()
  }
}
