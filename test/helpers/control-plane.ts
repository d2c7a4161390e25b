// A real control plane for a test: in-process HTTP server on 127.0.0.1:0 over a real SQLite file
// or a real PostgreSQL database, with an HS256 secret to mint admin and proxy tokens.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { mintToken } from '../../control-plane/auth.ts'
import type { Doc } from '../../control-plane/resources.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'

export const TEST_AUTH_SECRET = 'test-secret-0123456789abcdef0123456789'

export interface TestControlPlane extends ControlPlane {
  dir: string
  dbSpec: string
  keyPath: string
  token(claims: { sub?: string; roles?: string[]; attrs?: string[]; tenant?: string }): Promise<string>
  /** fetch with a bearer token (admin role unless given). */
  api(path: string, init?: RequestInit & { token?: string }): Promise<Response>
}

export function seedDocument(backendUrl = 'http://127.0.0.1:9'): Doc {
  return {
    mode: 'sidecar',
    upstreams: { backend: { url: backendUrl } },
    tenants: { acme: { tier: 'gold' }, globex: { tier: 'silver', timezone: 'America/New_York' } },
    routes: [{ name: 'graphql', upstream: 'backend', filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'acme' }] }],
  }
}

export async function startTestControlPlane(opts: { db?: string; seed?: Doc | null; dir?: string; port?: number } = {}): Promise<TestControlPlane> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'igw-cp-'))
  const dbSpec = opts.db ?? `sqlite:${join(dir, 'igw.db')}`
  const keyPath = join(dir, 'signing-key.pem')
  const cp = await startControlPlane({
    db: dbSpec,
    host: '127.0.0.1',
    port: opts.port ?? 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: loadOrCreateSigningKey(keyPath),
    ...(opts.seed === null ? {} : { seed: opts.seed ?? seedDocument() }),
    logger: pino({ level: 'silent' }),
  })
  const admin = await mintToken(TEST_AUTH_SECRET, { sub: 'test-admin', roles: ['admin'] })
  return Object.assign(cp, {
    dir,
    dbSpec,
    keyPath,
    token: (c: { sub?: string; roles?: string[]; attrs?: string[]; tenant?: string }) => mintToken(TEST_AUTH_SECRET, { sub: c.sub ?? 'someone', ...c }),
    api: (path: string, init: RequestInit & { token?: string } = {}) => {
      const headers = new Headers(init.headers)
      if (!headers.has('authorization') && init.token !== '') headers.set('authorization', `Bearer ${init.token ?? admin}`)
      if (init.body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json')
      return fetch(`${cp.url}${path}`, { ...init, headers })
    },
  })
}
