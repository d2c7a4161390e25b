// What the cache keeps in Redis: the optional shared L2 of entries and the invalidations that
// reach other proxies. Redis's own order makes it safe: an invalidation (one Lua script)
// records the tag's sequence, deletes the entries carrying it and publishes the tags; a store
// (one Lua script) refuses an entry whose request started before an invalidation of one of
// its tags. Every call is bounded by a timeout; Redis down means L1-only, counted.
import { createHash, randomUUID } from 'node:crypto'
import type { RedisProvider } from '../../proxy/filter.ts'

// ARGV: prefix, marker TTL, message, done-marker TTL, n, n tokens, tags. Each purge call has a
// token, marked done here: a replay (the reply came too late or was lost, or the call failed)
// carries the tokens of the purges it stands for and is skipped when all of them already ran —
// it used to purge again what had been refilled meanwhile, a miss per entity for every
// timed-out purge. The check and the purge are one script: no purge is lost in between.
const INVALIDATE = `
local prefix = ARGV[1]
local n = tonumber(ARGV[5])
local ran = n > 0
for i = 6, 5 + n do
  if redis.call('EXISTS', prefix .. 'cache:done:' .. ARGV[i]) == 0 then ran = false break end
end
if ran then return 0 end
local seq = redis.call('INCR', prefix .. 'cache:seq')
for i = 6 + n, #ARGV do
  local t = ARGV[i]
  redis.call('SET', prefix .. 'cache:ts:' .. t, seq, 'PX', ARGV[2])
  local set = prefix .. 'cache:t:' .. t
  local members = redis.call('SMEMBERS', set)
  for _, k in ipairs(members) do redis.call('DEL', k) end
  redis.call('DEL', set)
end
for i = 6, 5 + n do redis.call('SET', prefix .. 'cache:done:' .. ARGV[i], 1, 'PX', ARGV[4]) end
redis.call('PUBLISH', prefix .. 'cache:invalidate', ARGV[3])
return seq
`

const STORE = `
local prefix = ARGV[1]
for i = 5, #ARGV do
  local s = redis.call('GET', prefix .. 'cache:ts:' .. ARGV[i])
  if s and tonumber(s) > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
for i = 5, #ARGV do
  local set = prefix .. 'cache:t:' .. ARGV[i]
  redis.call('SADD', set, KEYS[1])
  if redis.call('PTTL', set) < tonumber(ARGV[4]) then redis.call('PEXPIRE', set, ARGV[4]) end
end
return 1
`

export interface L2Meta {
  s: number
  h: Record<string, string>
  c: number
  f: number
  w: number
  e: number
  t: string[]
  /** When stored (c is the upstream's creation, earlier by its Age); absent in older entries. */
  a?: number
}

export interface InvalidationMessage {
  /** Nonce of the publishing process (it skips its own). */
  o: string
  t: string[]
}

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v)
}

/** An entry's meta line, undefined unless it has every field an entry is built from. */
function decodeMeta(line: Buffer): L2Meta | undefined {
  let m: unknown
  try {
    m = JSON.parse(line.toString())
  } catch {
    return undefined
  }
  if (m === null || typeof m !== 'object') return undefined
  const o = m as Partial<L2Meta>
  if (!isNum(o.s) || !isNum(o.c) || !isNum(o.f) || !isNum(o.w) || !isNum(o.e) || (o.a !== undefined && !isNum(o.a))) return undefined
  if (o.h === null || typeof o.h !== 'object' || Array.isArray(o.h) || !Object.values(o.h).every((v) => typeof v === 'string')) return undefined
  if (!Array.isArray(o.t) || !o.t.every((t) => typeof t === 'string')) return undefined
  return o as L2Meta
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(reject, ms, new Error(`redis did not answer within ${ms} ms`))))]).finally(() => clearTimeout(timer))
}

const NL = 0x0a
const EMPTY = Buffer.alloc(0)

export class RedisLayer {
  readonly #redis: RedisProvider
  readonly #prefix: string
  readonly #timeoutMs: number
  readonly #markerMs: number
  readonly #onError: (op: string, err: unknown) => void

  /** Called with the tags of every purge Redis has made (late ones too: after a timeout, on a replay). */
  readonly #onPurged: ((tags: readonly string[]) => void) | undefined

  constructor(redis: RedisProvider, timeoutMs: number, maxLifeMs: number, onError: (op: string, err: unknown) => void, onPurged?: (tags: readonly string[]) => void) {
    this.#onPurged = onPurged
    this.#redis = redis
    this.#prefix = redis.keyPrefix
    this.#timeoutMs = timeoutMs
    // Invalidation markers must outlive any entry that could still be stored against them.
    this.#markerMs = Math.max(maxLifeMs, 1_000) + 60_000
    this.#onError = onError
  }

  entryKey(key: string): string {
    return `${this.#prefix}cache:e:${createHash('sha256').update(key).digest('base64url')}`
  }

  /**
   * The L2 entry (if any) and Redis's invalidation sequence now; undefined when Redis failed.
   * The sequence comes with an entry too: one past its freshness (kept for stale-if-error or
   * stale-while-revalidate) is replaced by the miss it causes, which stores against it.
   */
  async get(key: string): Promise<{ meta: L2Meta | undefined; body: Buffer; seq: number } | undefined> {
    try {
      const [raw, seq] = await withTimeout(this.#redis.client().mgetBuffer(this.entryKey(key), `${this.#prefix}cache:seq`), this.#timeoutMs)
      const s = seq ? Number(seq.toString()) : 0
      if (raw) {
        const nl = raw.indexOf(NL)
        const meta = nl === -1 ? undefined : decodeMeta(raw.subarray(0, nl))
        if (meta !== undefined) return { meta, body: raw.subarray(nl + 1), seq: s }
        // Unreadable (written by another version, truncated, hand-edited): read as a Redis
        // failure, it was never replaced (a miss without the sequence stores nothing in L2) and
        // every cold proxy went upstream for it until its TTL. Gone now, the miss refills it.
        this.#onError('decode', new Error('unreadable L2 entry; deleted'))
        this.#redis.client().del(this.entryKey(key)).catch((err: unknown) => this.#onError('delete', err))
      }
      return { meta: undefined, body: EMPTY, seq: s }
    } catch (err) {
      this.#onError('get', err)
      return undefined
    }
  }

  /**
   * Redis's invalidation sequence now (undefined when Redis failed): what a background refresh
   * records before its upstream request starts, so the entry it brings back may be written to L2
   * (refused there if a purge of one of its tags ran in between).
   */
  async seq(): Promise<number | undefined> {
    try {
      const v = await withTimeout(this.#redis.client().get(`${this.#prefix}cache:seq`), this.#timeoutMs)
      return v ? Number(v) : 0
    } catch (err) {
      this.#onError('get', err)
      return undefined
    }
  }

  /** Store unless one of its tags was invalidated in Redis after `startSeq`. Fire and forget. */
  store(key: string, meta: L2Meta, body: Buffer, startSeq: number, ttlMs: number): void {
    const payload = Buffer.concat([Buffer.from(JSON.stringify(meta)), Buffer.from([NL]), body])
    this.#redis.client().eval(STORE, 1, this.entryKey(key), this.#prefix, payload, String(startSeq), String(Math.max(1, Math.ceil(ttlMs))), ...meta.t).catch((err: unknown) => this.#onError('store', err))
  }

  /**
   * Purge L2 entries carrying the tags and tell other proxies; resolves when Redis has done it.
   * One that fails is kept and replayed once Redis answers again: Redis that comes back with its
   * data (a partition, a restart with persistence) would otherwise hold the entities as they
   * were before the write, and serve them from L2 — to this proxy too, whose L1 entries the
   * mutation removed — and the other proxies would never hear of it, until the TTL.
   */
  invalidate(tags: readonly string[], origin: string): Promise<boolean> {
    return this.#purge(tags, origin, [randomUUID()])
  }

  async #purge(tags: readonly string[], origin: string, tokens: readonly string[]): Promise<boolean> {
    const msg: InvalidationMessage = { o: origin, t: [...tags] }
    try {
      const run = this.#redis.client().eval(INVALIDATE, 0, this.#prefix, String(this.#markerMs), JSON.stringify(msg), String(DONE_MS), String(tokens.length), ...tokens, ...tags)
      // Landed (in time or late): nothing of this call is left to replay.
      await withTimeout(
        run.then(() => {
          for (const t of tokens) this.#tokens.delete(t)
          if (this.#tokens.size === 0 && !this.#unconditional) this.#unpurged.clear()
          this.#onPurged?.(tags)
        }),
        this.#timeoutMs,
      )
      return true
    } catch (err) {
      this.#onError('invalidate', err)
      this.#keepForReplay(tags, origin, tokens)
      return false
    }
  }

  /** Tags whose purge failed, replayed when Redis is ready again (bounded). */
  readonly #unpurged = new Set<string>()
  /** The tokens of those purges: the replay is skipped if all of them ran after all. */
  readonly #tokens = new Set<string>()
  /** Some token was not kept (bound): the replay purges whatever Redis says. */
  #unconditional = false
  #origin = ''
  #replayArmed = false

  #keepForReplay(tags: readonly string[], origin: string, tokens: readonly string[]): void {
    this.#origin = origin
    if (tokens.length === 0) this.#unconditional = true
    for (const t of tokens) {
      if (this.#tokens.size >= MAX_UNPURGED) {
        this.#unconditional = true
        break
      }
      this.#tokens.add(t)
    }
    for (const t of tags) {
      if (this.#unpurged.size >= MAX_UNPURGED) {
        this.#onError('invalidate', new Error(`more than ${MAX_UNPURGED} tags await a purge; the rest will not be replayed (the TTL bounds their staleness)`))
        break
      }
      this.#unpurged.add(t)
    }
    if (this.#replayArmed) return
    this.#replayArmed = true
    const client = this.#redis.client()
    // Disconnected: the first command after the reconnect (commands on one connection run in
    // order, so this worker's own L2 reads come after the purge). Connected but slow (a
    // timeout): retry shortly, after the timed-out call on the same connection, whose token
    // then tells the replay it ran.
    if (client.status === 'ready') setTimeout(replayUnpurged, REPLAY_DELAY_MS, this).unref()
    else client.once('ready', () => replayUnpurged(this))
  }

  /** Called by replayUnpurged: the pending purge, handed over once. */
  takeUnpurged(): { tags: string[]; origin: string; tokens: string[] } {
    this.#replayArmed = false
    const tags = [...this.#unpurged]
    const tokens = this.#unconditional ? [] : [...this.#tokens]
    this.#unpurged.clear()
    this.#tokens.clear()
    this.#unconditional = false
    return { tags, origin: this.#origin, tokens }
  }

  /** Called by replayUnpurged with what takeUnpurged handed over. */
  replay(tags: readonly string[], origin: string, tokens: readonly string[]): void {
    void this.#purge(tags, origin, tokens)
  }
}

const MAX_UNPURGED = 10_000
const REPLAY_DELAY_MS = 1_000
/**
 * How long Redis remembers that a purge ran: longer than a replay takes to follow it (~1 s, or
 * a reconnect); one that comes later purges again, which only costs misses.
 */
const DONE_MS = 30_000

function replayUnpurged(layer: RedisLayer): void {
  const { tags, origin, tokens } = layer.takeUnpurged()
  if (tags.length > 0) layer.replay(tags, origin, tokens)
}

// One subscription per worker and Redis provider, whatever the number of routes and reloads.
// A handler gets each message, or `undefined` when the subscription was re-established:
// whatever was published while it was down is lost, so it must drop what those could have
// invalidated.
type Handler = (m: InvalidationMessage | undefined) => void
/** Longest tag taken from another proxy's message (a `Type:id` with an id of up to ~64 KiB). */
const MAX_REMOTE_TAG = 64 * 1024
const subscriptions = new WeakMap<RedisProvider, Set<Handler>>()

/**
 * Call `handler` for every invalidation published by other proxies, and with `undefined` each
 * time the subscription is re-established (messages published while it was down never arrive).
 * Returns the unsubscribe.
 */
export function onRemoteInvalidation(redis: RedisProvider, handler: Handler, onError: (err: unknown) => void): () => void {
  let handlers = subscriptions.get(redis)
  if (handlers === undefined) {
    handlers = new Set()
    subscriptions.set(redis, handlers)
    const set = handlers
    const channel = `${redis.keyPrefix}cache:invalidate`
    const sub = redis.subscriber()
    // Commands fail fast while disconnected (no offline queue): subscribe on every 'ready'
    // (SUBSCRIBE is idempotent), which also covers reconnects.
    // Once subscribed, every handler hears that the invalidations published meanwhile (Redis
    // restarted, the connection dropped) are lost: before this, a proxy whose subscriber was
    // reconnecting kept serving what another proxy's mutation had invalidated, for the TTL.
    const resync = (): void => {
      for (const h of set) {
        try {
          h(undefined)
        } catch (err) {
          onError(err)
        }
      }
    }
    // Not on the first subscription: nothing was stored before it that another proxy's message
    // could have been meant for, except while Redis was down at the start (left alone: a
    // flush on every start would empty every worker's L1 whenever a worker thread restarts).
    let subscribed = false
    const subscribe = (): void =>
      void sub.subscribe(channel).then(() => {
        if (subscribed) resync()
        subscribed = true
      }, onError)
    if (sub.status === 'ready') subscribe()
    sub.on('ready', subscribe)
    sub.on('message', (ch: string, text: string) => {
      if (ch !== channel) return
      // Anyone who can PUBLISH on the channel reaches every proxy: only a well-formed message
      // gets through, and nothing it holds may throw out of this listener (a worker would die).
      let m: unknown
      try {
        m = JSON.parse(text)
      } catch {
        return
      }
      if (m === null || typeof m !== 'object' || !Array.isArray((m as { t?: unknown }).t)) return
      // Tags as long as a proxy makes them: an entity's id is the backend's (a URL, a composite
      // key). Capped at 1024 characters, a mutation of such an entity invalidated its own proxy
      // and no other. The bound only keeps a junk publisher's giant strings out.
      const tags = ((m as { t: unknown[] }).t).filter((t): t is string => typeof t === 'string' && t.length <= MAX_REMOTE_TAG)
      if (tags.length === 0) return
      const o = (m as { o?: unknown }).o
      const msg: InvalidationMessage = { o: typeof o === 'string' ? o : '', t: tags }
      for (const h of set) {
        try {
          h(msg)
        } catch (err) {
          onError(err)
        }
      }
    })
  }
  handlers.add(handler)
  const set = handlers
  return () => void set.delete(handler)
}
