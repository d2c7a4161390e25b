// One Redis command connection (and one subscriber connection, on demand) per worker thread,
// shared by every filter that needs Redis. Commands fail fast while disconnected (no offline
// queue): a filter with a latency budget must see the outage at once, not after a queue drains.
import { Redis, type RedisOptions } from 'ioredis'
import type { Logger } from 'pino'
import type { Counter, Gauge } from 'prom-client'

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

  static options(): RedisOptions {
    return {
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
    const r = new Redis(this.url, SharedRedis.options())
    let wasReady = false
    r.on('ready', () => {
      if (role === 'client') this.#metrics.up.set(1)
      if (wasReady) this.#metrics.reconnects.inc()
      wasReady = true
      this.#logger.info({ role }, 'redis ready')
    })
    r.on('end', () => role === 'client' && this.#metrics.up.set(0))
    r.on('close', () => role === 'client' && this.#metrics.up.set(0))
    let lastLog = 0
    r.on('error', (err: Error) => {
      // ioredis reports every failed reconnect; one line per 5 s is enough for an operator.
      const now = Date.now()
      if (now - lastLog > 5_000) {
        lastLog = now
        this.#logger.warn({ role, err: { message: err.message } }, 'redis error')
      }
    })
    return r
  }

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
    for (const r of [this.#client, this.#subscriber]) {
      if (r) await r.quit().catch(() => r.disconnect())
    }
    this.#client = undefined
    this.#subscriber = undefined
  }
}
