// `usedToday` per (tenant, kind). When the document gives proxies a shared Redis, the quota
// filter's own daily counter there is the authority (config/quota-usage.ts: usedTodayFromRedis);
// otherwise — or when Redis does not answer — the sum of the proxies' usage reports is.
import { Redis } from 'ioredis'
import { usedTodayFromRedis } from '../config/quota-usage.ts'
import type { QuotaKind } from './quota-section.ts'
import type { Doc } from './resources.ts'
import type { UsageLedger } from './usage.ts'

const CONNECT_TIMEOUT_MS = 1_000

/**
 * After Redis failed a read, the reports answer for this long before it is asked again. A Redis
 * that hangs (frozen, a partition: the connection stays up and nothing answers) fails each
 * command only at its 500 ms timeout, and a quota listing asks once per tenant: GET /v1/quotas
 * over 20 tenants took 10 s, over 200 more than a minute and a half.
 */
const REDIS_RETRY_MS = 5_000

/** Resolves when the client is ready, its connection attempt failed, or the connect timeout passed. */
function firstConnection(client: Redis): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      client.off('ready', done)
      client.off('error', done)
      client.off('end', done)
      resolve()
    }
    const timer = setTimeout(done, CONNECT_TIMEOUT_MS + 100)
    timer.unref()
    client.once('ready', done)
    client.once('error', done)
    client.once('end', done)
  })
}

export class UsedToday {
  readonly #usage: UsageLedger
  #redis: { url: string; client: Redis; connected: Promise<void> } | undefined
  /** The Redis that last failed a read, and until when it is not asked (REDIS_RETRY_MS). */
  #failed: { url: string; until: number } | undefined

  constructor(usage: UsageLedger) {
    this.#usage = usage
  }

  async #client(url: string): Promise<Redis> {
    if (this.#redis?.url !== url) {
      void this.#redis?.client.quit().catch(() => undefined)
      // Fail fast: an admin read must not hang on a Redis outage; the reports answer instead.
      const client = new Redis(url, { lazyConnect: false, enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: CONNECT_TIMEOUT_MS, commandTimeout: 500 })
      client.on('error', () => undefined)
      this.#redis = { url, client, connected: firstConnection(client) }
    }
    const { client, connected } = this.#redis
    // Without an offline queue a command sent before the first connection is up fails at once,
    // and the first read after a start (or after the document named another Redis) would answer
    // from the reports. Wait for that first connection — bounded by the connect timeout; a Redis
    // that was up and went away ('reconnecting') is an outage: no wait.
    if (client.status === 'connecting' || client.status === 'connect' || client.status === 'wait') await connected
    return client
  }

  /** kind → units used today for one tenant. */
  async forTenant(doc: Doc, tenant: string, kinds: QuotaKind[], timeZone: string): Promise<Map<string, number>> {
    const redis = doc.redis as { url?: string; keyPrefix?: string } | undefined
    const failed = this.#failed
    if (redis?.url && (failed === undefined || failed.url !== redis.url || Date.now() >= failed.until)) {
      try {
        const client = await this.#client(redis.url)
        const out = new Map<string, number>()
        for (const k of kinds) out.set(k, await usedTodayFromRedis(client, redis.keyPrefix ?? 'igw:', tenant, k, timeZone))
        this.#failed = undefined
        return out
      } catch {
        this.#failed = { url: redis.url, until: Date.now() + REDIS_RETRY_MS }
        // fall through to the reports
      }
    }
    return this.#usage.usedToday(tenant, timeZone)
  }

  async close(): Promise<void> {
    await this.#redis?.client.quit().catch(() => undefined)
    this.#redis = undefined
  }
}
