// docs/persisted-and-cache.md: `requireTenant` (default true) "refuse[s] to start without a tenant
// filter before cache", and a tenant filter after cache "is refused either way". Only the cache
// filter's build checked it: `igw config validate` called such a document valid, the control plane
// committed it (every proxy then NACKed it and retried it as if a file were missing), and
// `igw proxy --config` exited 1 at start instead of 78 naming the path. Sweep 33c: refused at
// validation, naming the path.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const doc = (filters: unknown[]) => ({ tenants: { acme: {} }, routes: [{ name: 'graphql', upstream: 'http://127.0.0.1:4000', type: 'graphql', filters }] })

describe('cache and the tenant filter, checked at validation (sweep 33c)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-33c-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('a cache without a tenant filter before it is refused unless requireTenant: false', () => {
    expect(problems(() => validateConfig(doc([{ name: 'request-id' }, { name: 'cache' }])))).toEqual([
      'routes[0].filters[1].requireTenant: no tenant filter runs before cache on this route (entries are keyed by tenant): add one before it, or set requireTenant: false for a single-tenant route',
    ])
    expect(() => validateConfig(doc([{ name: 'cache', requireTenant: false }]))).not.toThrow()
  })

  it('a tenant filter after cache is refused, requireTenant or not', () => {
    const want = [
      'routes[0].filters[1]: a tenant filter runs after cache (routes[0].filters[0]): hits would be served without its token check, and entries shared across tenants; put tenant before cache',
    ]
    expect(problems(() => validateConfig(doc([{ name: 'cache' }, { name: 'tenant' }])))).toEqual(want)
    expect(problems(() => validateConfig(doc([{ name: 'cache', requireTenant: false }, { name: 'tenant' }])))).toEqual(want)
  })

  it('(guard) tenant, then cache, loads', () => {
    expect(() => validateConfig(doc([{ name: 'tenant' }, { name: 'persisted' }, { name: 'cache' }]))).not.toThrow()
  })

  it('`igw config validate` exits 78 naming the path (it said "valid")', async () => {
    const file = join(dir, 'cache-first.yaml')
    writeFileSync(file, 'routes:\n  - name: g\n    upstream: http://127.0.0.1:4000\n    filters:\n      - name: cache\n')
    const child = spawn(process.execPath, [IGW_BIN, 'config', 'validate', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const [code] = await once(child, 'exit')
    expect(out).toContain('routes[0].filters[0].requireTenant: no tenant filter runs before cache')
    expect(code).toBe(78)
  })
})
