// IgwQuotaRedisErrors reads igw_quota_redis_errors_total{error=~"error|key"} while igw_redis_up
// is above 0. What a real proxy exports when its real Redis is full under noeviction (every
// quota script refused with "OOM command not allowed") must match that selector — connected,
// refusing — or the alert would never fire on the outage it was written for.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { startDemoBackend } from '../helpers/backends.ts'
import { freePort } from '../helpers/ports.ts'
import { metricSum, startTestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('IgwQuotaRedisErrors on a real full Redis', () => {
  it('a noeviction Redis at its maxmemory: connected (igw_redis_up 1) and quota scripts counted as error="error"', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-full-redis-'))
    const port = await freePort()
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory', '4mb', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' })
    const admin = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    admin.on('error', () => {})
    const backend = await startDemoBackend()
    let proxy: Awaited<ReturnType<typeof startTestProxy>> | undefined
    try {
      await waitUntil(async () => {
        try {
          await admin.connect()
          return true
        } catch {
          admin.disconnect()
          return false
        }
      }, 10_000)
      // Fill it: writes are refused from here on (reads still work).
      const chunk = 'x'.repeat(64 * 1024)
      for (let i = 0; i < 200; i++) {
        try {
          await admin.set(`filler:${i}`, chunk)
        } catch (err) {
          expect(String(err)).toMatch(/OOM/)
          break
        }
      }
      proxy = await startTestProxy({
        redis: { url: `redis://127.0.0.1:${port}` },
        tenants: { acme: {} },
        quotas: { tenants: { acme: { graphql: { rate: 1000, burst: 1000 } } }, redis: { onOutage: 'fail-open' } },
        routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] as never }],
      })
      const p = proxy
      let text = ''
      await waitUntil(async () => {
        const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ hello }"}' })
        await r.body.dump()
        text = await p.metricsText()
        return metricSum(text, 'igw_quota_redis_errors_total', 'error="error"') > 0
      }, 15_000)
      expect(metricSum(text, 'igw_redis_up')).toBeGreaterThan(0)
      expect(metricSum(text, 'igw_quota_redis_errors_total', 'error="unavailable"')).toBe(0)
    } finally {
      await proxy?.close()
      await backend.close()
      admin.disconnect()
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
