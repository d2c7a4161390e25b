// usedToday (and budgets) survive a restart of a proxy without Redis: the state file is written
// on SIGTERM (each worker's filter close) and periodically (a crash loses at most one period).
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readQuotaStateFile, usedTodayFromState } from '../../../config/quota-usage.ts'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, spawnIgw, writeTempConfig } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

const QUERY = JSON.stringify({ query: '{ hello }' })

let backend: DemoBackend
beforeAll(async () => {
  backend = await startDemoBackend()
})
afterAll(async () => {
  await backend?.close()
})

async function send(url: string, tenant: string, n: number): Promise<(string | number)[]> {
  const pool = new Pool(url, { connections: 4 })
  try {
    return await Promise.all(
      Array.from({ length: n }, () =>
        pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: QUERY }).then(async (r) => {
          const j = (await r.body.json()) as { errors?: { extensions: { code: string } }[] }
          return r.statusCode === 200 ? 200 : j.errors![0]!.extensions.code
        }),
      ),
    )
  } finally {
    await pool.close()
  }
}

const metrics = async (adminUrl: string) => (await fetch(`${adminUrl}/metrics`)).text()

describe('restart keeps usedToday (no Redis: the state file)', () => {
  it('SIGTERM writes it, a restart restores it, the quota continues where it was', async () => {
    const stateFile = join(mkdtempSync(join(tmpdir(), 'igw-quota-')), 'quota-state.json')
    const configPath = writeTempConfig({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 2,
      log: { level: 'warn', access: { enabled: false } },
      tenants: { acme: { timezone: 'America/New_York' }, crash: {} },
      quotas: {
        tenants: { acme: { graphql: { limitPerDay: 100 }, budget: { units: 1000 } }, crash: { graphql: { limitPerDay: 100 } } },
        stateFile,
        flushIntervalMs: 200,
      },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }],
    })
    let igw = await spawnIgw(['proxy', '--config', configPath])
    try {
      expect((await send(igw.url, 'acme', 30)).every((s) => s === 200)).toBe(true)
      expect(await igw.stop('SIGTERM')).toBe(0)
      expect(existsSync(stateFile)).toBe(true)
      expect(usedTodayFromState(readQuotaStateFile(stateFile)!, 'acme', 'graphql', 'America/New_York')).toBe(30)

      igw = await spawnIgw(['proxy', '--config', configPath])
      const m = await metrics(igw.adminUrl)
      expect(metricSum(m, 'igw_quota_used_today', 'tenant="acme"')).toBe(30)
      expect(metricSum(m, 'igw_budget_used_ratio', 'tenant="acme"')).toBeCloseTo(0.03, 5)
      const rest = await send(igw.url, 'acme', 71)
      expect(rest.filter((s) => s === 200)).toHaveLength(70)
      expect(rest.filter((s) => s === 'QUOTA_EXCEEDED')).toHaveLength(1)

      // A crash (SIGKILL: no shutdown) loses at most one flush period.
      expect((await send(igw.url, 'crash', 20)).every((s) => s === 200)).toBe(true)
      // The periodic flush (200 ms) has written them by 700 ms: killed as soon as the file says so.
      await waitUntil(() => {
        const doc = readQuotaStateFile(stateFile)
        return doc !== undefined && usedTodayFromState(doc, 'crash', 'graphql') === 20
      }, 700, 'the periodic flush of the crash tenant\'s 20')
      await igw.stop('SIGKILL')
      igw = await spawnIgw(['proxy', '--config', configPath])
      const after = await metrics(igw.adminUrl)
      expect(metricSum(after, 'igw_quota_used_today', 'tenant="crash"')).toBe(20)
      expect(metricSum(after, 'igw_quota_used_today', 'tenant="acme"')).toBe(100)
    } finally {
      await igw.stop()
    }
  })
})
