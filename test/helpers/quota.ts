// What the quota outage tests share: requests one after another (each decided before the next
// is sent, so counts are exact), the owed-units files in a state directory, and a tenant's daily
// usage as Redis holds it.
import { readdirSync } from 'node:fs'
import { Redis } from 'ioredis'
import { Pool } from 'undici'
import { quotaKeys } from '../../config/quota-usage.ts'

/** `n` POSTs of `body` for `tenant`, one after the other over one connection: their status codes. */
export async function sendInTurn(url: string, tenant: string, n: number, body: string): Promise<number[]> {
  const pool = new Pool(url, { connections: 1 })
  const out: number[] = []
  try {
    for (let i = 0; i < n; i++) {
      const r = await pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body })
      await r.body.text()
      out.push(r.statusCode)
    }
  } finally {
    await pool.close()
  }
  return out
}

/** The owed-units files (`<state>.owed.<epoch>.<thread>.json`) in `dir`. */
export function owedFiles(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.includes('.owed.') && n.endsWith('.json'))
}

/** The units Redis holds for `tenant`'s kind `graphql` today (0 when none). */
export async function graphqlUsedInRedis(redisUrl: string, prefix: string, tenant = 'acme'): Promise<number> {
  const admin = new Redis(redisUrl, { maxRetriesPerRequest: 1 })
  try {
    return Number((await admin.hget(quotaKeys.kind(prefix, tenant, 'graphql'), 'u')) ?? 0)
  } finally {
    admin.disconnect()
  }
}

/** What Redis counts for `tenant`: today's usage of kind graphql and the budget's total. */
export async function graphqlUsageInRedis(redisUrl: string, prefix: string, tenant: string): Promise<{ used: number; budget: number }> {
  const admin = new Redis(redisUrl, { maxRetriesPerRequest: 1 })
  try {
    const used = Number((await admin.hget(quotaKeys.kind(prefix, tenant, 'graphql'), 'u')) ?? 0)
    const budget = Number((await admin.hget(quotaKeys.budget(prefix, tenant), 'tot')) ?? 0)
    return { used, budget }
  } finally {
    admin.disconnect()
  }
}
