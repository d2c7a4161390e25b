// `usedToday` per (tenant, kind). When the document gives proxies a shared Redis, the quota
// filter's own daily counter there is the authority (config/quota-usage.ts: usedTodayFromRedis);
// otherwise — or when Redis does not answer — the sum of the proxies' usage reports is.
import { Redis } from 'ioredis'
import { usedTodayFromRedis } from '../config/quota-usage.ts'
import type { QuotaKind } from './quota-section.ts'
import type { Doc } from './resources.ts'
import type { UsageLedger } from './usage.ts'

const CONNECT_TIMEOUT_MS = 1_000

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
    if (redis?.url) {
      try {
        const client = await this.#client(redis.url)
        const out = new Map<string, number>()
        for (const k of kinds) out.set(k, await usedTodayFromRedis(client, redis.keyPrefix ?? 'igw:', tenant, k, timeZone))
        return out
      } catch {
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
