// `usedToday` per (tenant, kind). When the document gives proxies a shared Redis, the quota
// filter's own daily counter there is the authority (config/quota-usage.ts: usedTodayFromRedis);
// otherwise — or when Redis does not answer — the sum of the proxies' usage reports is.
import { Redis } from 'ioredis'
import { usedTodayFromRedis } from '../config/quota-usage.ts'
import type { QuotaKind } from './quota-section.ts'
import type { Doc } from './resources.ts'
import type { UsageLedger } from './usage.ts'

export class UsedToday {
  readonly #usage: UsageLedger
  #redis: { url: string; client: Redis } | undefined

  constructor(usage: UsageLedger) {
    this.#usage = usage
  }

  #client(url: string): Redis {
    if (this.#redis?.url === url) return this.#redis.client
    void this.#redis?.client.quit().catch(() => undefined)
    // Fail fast: an admin read must not hang on a Redis outage; the reports answer instead.
    const client = new Redis(url, { lazyConnect: false, enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 1_000, commandTimeout: 500 })
    client.on('error', () => undefined)
    this.#redis = { url, client }
    return client
  }

  /** kind → units used today for one tenant. */
  async forTenant(doc: Doc, tenant: string, kinds: QuotaKind[], timeZone: string): Promise<Map<string, number>> {
    const redis = doc.redis as { url?: string; keyPrefix?: string } | undefined
    if (redis?.url) {
      try {
        const client = this.#client(redis.url)
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
