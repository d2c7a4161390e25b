// A config version that a worker refuses (a filter later in the chain cannot be built) must leave
// the quota filter's shared jobs on the version still in force. The quota runtime took each new
// filter's config as the thread's as it was built, so a refused document's stateFile (and webhook,
// anomaly and Redis settings) stayed in use after the NACK: the shutdown write went to the refused
// path and the next start, reading the real one, had lost the day's usage.
// Real proxy (supervisor + worker thread), real graphql-yoga backend, real undici client.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import type { GatewayConfigInput } from '../../config/schema.ts'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy } from '../helpers/proxy.ts'

async function gql(url: string): Promise<number> {
  const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ hello }"}' })
  await res.body.text()
  return res.statusCode
}

describe('quota runtime after a refused config version', () => {
  let backend: DemoBackend
  beforeAll(async () => {
    backend = await startDemoBackend()
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('the state file stays the running version\'s: usage is written where the next start reads it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-quota-nack-'))
    const running = join(dir, 'running.json')
    const refused = join(dir, 'refused.json')
    const doc = (stateFile: string, extraRoutes: GatewayConfigInput['routes'] = []): Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> => ({
      workers: 1,
      tenants: { acme: {} },
      // Only the shutdown writes (an hour between periodic writes).
      quotas: { stateFile, flushIntervalMs: 3_600_000, tenants: { acme: { graphql: { limitPerDay: 100 } } } },
      routes: [{ name: 'api', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'quota' }] }, ...extraRoutes],
    })
    const p = await startTestProxy(doc(running))
    let closed = false
    try {
      for (let i = 0; i < 3; i++) expect(await gql(p.url)).toBe(200)
      // The quota filter of route "api" builds; route "est"'s persisted filter cannot (no schema file).
      const bad = doc(refused, [
        { name: 'est', upstream: backend.url, match: { pathPrefix: '/est' }, filters: [{ name: 'tenant' }, { name: 'quota' }, { name: 'persisted', cost: { schemaFile: join(dir, 'missing.graphql') } }] },
      ] as never)
      const result = await p.applyConfig(validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, ...bad }))
      expect(result.ok).toBe(false)
      expect(result.error).toMatch(/schemaFile/)
      for (let i = 0; i < 2; i++) expect(await gql(p.url)).toBe(200)
      await p.close()
      closed = true
      expect(existsSync(refused)).toBe(false)
      const saved = JSON.parse(readFileSync(running, 'utf8')) as { tenants: { tenant: string; kinds: Record<string, { used: number }> }[] }
      expect(saved.tenants.find((t) => t.tenant === 'acme')?.kinds.graphql?.used).toBe(5)
    } finally {
      if (!closed) await p.close()
    }
  })
})
