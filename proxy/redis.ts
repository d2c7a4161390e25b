// One Redis command connection (and one subscriber connection, on demand) per worker thread,
// shared by every filter that needs Redis. Commands fail fast while disconnected (no offline
// queue): a filter with a latency budget must see the outage at once, not after a queue drains.
// A Redis that hangs (stopped, partitioned without a reset) keeps the connection "ready" while
// nothing answers, so commands pile up in ioredis's reply queue without bound; a heartbeat
// notices and drops the connection, which fails them all and sends callers down their outage
// path until Redis answers again. The subscriber has one too: a silent one loses every message
// published meanwhile, and only a new connection's 'ready' tells its users (the cache's resync).
import { Redis, type RedisOptions } from 'ioredis'
import type { Logger } from 'pino'
import { oncePer } from './log.ts'
import type { Counter, Gauge } from 'prom-client'

// A PING goes out this often while the command connection is ready…
const HEARTBEAT_MS = 250
// …and one unanswered for this long means Redis hangs: far above any healthy round trip, and
// short enough that the queue a hang builds up stays small.
const UNRESPONSIVE_MS = 2_000

export interface RedisProvider {
  readonly url: string
  /** Prefix every key with this (config `redis.keyPrefix`). */
  readonly keyPrefix: string
  /** The shared command connection (connects on first use). */
  client(): Redis
  /** A shared connection in subscriber mode, for pub/sub; separate because subscribing blocks commands. */
  subscriber(): Redis
  /** True while the command connection is ready. */
  readonly ready: boolean
  close(): Promise<void>
}

/** Resolves true when `client` becomes ready within `ms`, false otherwise (one listener, one timer, both released). */
export function readyWithin(client: Redis, ms: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true)
  return new Promise((resolve) => {
    const onReady = () => {
      clearTimeout(timer)
      resolve(true)
    }
    const timer = setTimeout(() => {
      client.removeListener('ready', onReady)
      resolve(false)
    }, ms)
    client.once('ready', onReady)
  })
}

export interface RedisMetrics {
  up: Gauge
  reconnects: Counter
}

export class SharedRedis implements RedisProvider {
  readonly url: string
  readonly keyPrefix: string
  #client: Redis | undefined
  #subscriber: Redis | undefined
  readonly #logger: Logger
  readonly #metrics: RedisMetrics

  constructor(url: string, keyPrefix: string, logger: Logger, metrics: RedisMetrics) {
    this.url = url
    this.keyPrefix = keyPrefix
    this.#logger = logger
    this.#metrics = metrics
  }

  /**
   * `url`: the connection's URL. A `rediss:` scheme in any case (`REDISS://`, which validation
   * accepts: URL schemes are case-insensitive) asks for TLS here, explicitly: ioredis looks for
   * the lowercase prefix only, so an upper-case one connected in plaintext and sent the AUTH
   * password in the clear to a TLS port.
   */
  static options(url?: string): RedisOptions {
    return {
      ...(url !== undefined && /^rediss:/i.test(url) ? { tls: {} } : {}),
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 1_000,
      // Reconnect forever, quickly at first: recovery must not wait for a human.
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 5), 1_000),
      enableAutoPipelining: true,
    }
  }

  #connect(role: string): Redis {
    const r = new Redis(this.url, SharedRedis.options(this.url))
    let wasReady = false
    r.on('ready', () => {
      if (role === 'client') this.#metrics.up.set(1)
      if (wasReady) this.#metrics.reconnects.inc()
      wasReady = true
      this.#logger.info({ role }, 'redis ready')
    })
    r.on('end', () => role === 'client' && this.#metrics.up.set(0))
    r.on('close', () => role === 'client' && this.#metrics.up.set(0))
    this.#watch(r, role)
    const logNow = oncePer(5_000) // ioredis reports every failed reconnect
    r.on('error', (err: Error) => {
      if (logNow()) this.#logger.warn({ role, err: { message: err.message } }, 'redis error')
    })
    return r
  }

  /**
   * Heartbeat for a connection: a PING every HEARTBEAT_MS while ready (allowed in subscriber
   * mode too); one still unanswered after UNRESPONSIVE_MS drops the connection (ioredis then
   * rejects every queued command and reconnects on its own schedule).
   */
  #watch(r: Redis, role: string): void {
    let sentAt = 0
    let handshakeSince = 0
    const onReply = () => {
      sentAt = 0
    }
    const heartbeat = setInterval(() => {
      if (r.status !== 'ready') {
        sentAt = 0
        // Connected but not ready: ioredis's ready check (INFO) is unanswered. connectTimeout
        // covers only the TCP connect, so a peer that accepts and stays silent (a proxy or load
        // balancer in front of a dead Redis) held the connection here for good, never retried.
        if (r.status !== 'connect') handshakeSince = 0
        else if (handshakeSince === 0) handshakeSince = Date.now()
        else if (Date.now() - handshakeSince >= UNRESPONSIVE_MS) {
          this.#logger.warn({ role, silentMs: Date.now() - handshakeSince }, 'redis accepted the connection but did not answer its ready check; reconnecting')
          handshakeSince = 0
          r.disconnect(true)
        }
        return
      }
      handshakeSince = 0
      const now = Date.now()
      if (sentAt === 0) {
        sentAt = now
        r.ping().then(onReply, onReply)
      } else if (now - sentAt >= UNRESPONSIVE_MS) {
        this.#logger.warn({ role, silentMs: now - sentAt }, 'redis connected but not answering; dropping the connection')
        sentAt = 0
        r.disconnect(true)
      }
    }, HEARTBEAT_MS)
    heartbeat.unref()
    this.#heartbeats.push(heartbeat)
  }
  readonly #heartbeats: NodeJS.Timeout[] = []

  get ready(): boolean {
    return this.#client?.status === 'ready'
  }

  client(): Redis {
    return (this.#client ??= this.#connect('client'))
  }

  subscriber(): Redis {
    return (this.#subscriber ??= this.#connect('subscriber'))
  }

  async close(): Promise<void> {
    for (const h of this.#heartbeats.splice(0)) clearInterval(h)
    const open = [this.#client, this.#subscriber].filter((r) => r !== undefined)
    this.#client = undefined
    this.#subscriber = undefined
    await Promise.all(open.map(quit))
  }
}

/**
 * QUIT (Redis answers once it has done what was sent before), or drop the connection when it
 * fails or goes unanswered for UNRESPONSIVE_MS: a Redis that hangs never answers, and awaited
 * without bound, a worker's shutdown hung with it (its last usage report lost when the supervisor
 * killed the thread at the drain deadline) and a reload's retired connection stayed open.
 */
function quit(r: Redis): Promise<void> {
  return new Promise((resolve) => {
    const drop = (): void => {
      clearTimeout(timer)
      r.disconnect()
      resolve()
    }
    const timer = setTimeout(drop, UNRESPONSIVE_MS)
    r.quit().then(() => {
      clearTimeout(timer)
      resolve()
    }, drop)
  })
}
