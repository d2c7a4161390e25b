// An SRE's walk through docs/control-plane.md against a real `igw control-plane` process (the CLI,
// SQLite, an HS256 secret), with curl-like undici requests, found:
// - a refused config push (an invalid document: 400; a stale If-Match from a second operator: 412)
//   left no trace on the control plane: not audited (nothing was committed, as documented) and not
//   logged either, so the server side could not say who tried what when CI reported a failure;
// - If-Match with the current ETag made weak (`W/"…"`, as nginx marks the ETag of a response it
//   gzips) was refused with "does not match … (someone changed it; GET it again)": nobody had, and
//   GETting again gave the same weak tag back, forever;
// - a request with no bearer token (or a Basic one) was challenged `Bearer error="invalid_token"`,
//   which RFC 6750 §3.1 reserves for a token that was sent and refused (the data plane answers a
//   bare challenge since sweep 18c).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { IGW_BIN } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

const SECRET = 'sweep36f-secret-of-more-than-32-characters'
const SEED = `mode: sidecar
upstreams:
  backend: {url: "http://127.0.0.1:9"}
tenants:
  acme: {tier: gold}
routes:
  - name: graphql
    upstream: backend
    filters: [{name: request-id}, {name: tenant, defaultTenant: acme}]
`

describe('igw control-plane: what an operator sees of a refused push', () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-push-refusals-sweep36f-'))
  let child: ChildProcess
  let out = ''
  let base = ''
  const tokens: Record<string, string> = {}
  const lines = (): Record<string, unknown>[] =>
    out.split('\n').flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>]
      } catch {
        return []
      }
    })

  beforeAll(async () => {
    writeFileSync(join(dir, 'seed.yaml'), SEED)
    child = spawn(process.execPath, [IGW_BIN, 'control-plane', '--db', `sqlite:${join(dir, 'igw.db')}`, '--auth-secret', SECRET, '--config', join(dir, 'seed.yaml'), '--listen', '127.0.0.1:0', '--metrics-listen', 'off'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
    await waitUntil(() => lines().some((l) => l.msg === 'igw control plane listening') || child.exitCode !== null, 30_000, 'the control plane listening')
    expect(child.exitCode, out).toBeNull()
    base = `http://127.0.0.1:${String(lines().find((l) => l.msg === 'igw control plane listening')!.listen).split(':').pop()}`
    tokens.alice = await mintToken(SECRET, { sub: 'alice', roles: ['admin'] })
    tokens.bob = await mintToken(SECRET, { sub: 'bob', roles: ['operator'] })
    tokens.vic = await mintToken(SECRET, { sub: 'vic', roles: ['viewer'] })
  }, 60_000)
  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  })

  async function call(method: 'GET' | 'PUT' | 'POST', path: string, o: { as?: string; authorization?: string; body?: unknown; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...o.headers }
    if (o.authorization !== undefined) headers.authorization = o.authorization
    else if (o.as !== undefined) headers.authorization = `Bearer ${tokens[o.as]}`
    if (o.body !== undefined) headers['content-type'] = 'application/json'
    const r = await request(`${base}${path}`, { method, headers, ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}) })
    const text = await r.body.text()
    return { status: r.statusCode, headers: r.headers, json: (text ? JSON.parse(text) : undefined) as Record<string, unknown> }
  }
  const head = async () => {
    const r = await call('GET', '/v1/config', { as: 'alice' })
    return { version: r.json.version as number, etag: String(r.headers.etag), document: r.json.document as Record<string, unknown> }
  }
  const auditCount = async () => ((await call('GET', '/v1/audit?limit=1000', { as: 'alice' })).json.items as unknown[]).length
  const refusedLines = () => lines().filter((l) => l.msg === 'write refused')

  it('an invalid push is a 400 naming the path, commits nothing, is not audited, and is logged with who sent it', { timeout: 30_000 }, async () => {
    const before = await head()
    const entries = await auditCount()
    const bad = { ...before.document, tenants: { acme: { tier: 'platinum' } } }
    const r = await call('PUT', '/v1/config', { as: 'alice', body: bad, headers: { 'if-match': before.etag, 'x-request-id': 'ci-push-41' } })
    expect(r.status).toBe(400)
    expect(r.json.problems).toEqual(['tenants.acme.tier: expected one of "gold" | "silver" | "bronze", got "platinum"'])
    expect(await head()).toEqual(before)
    expect(await auditCount()).toBe(entries)
    await expect.poll(() => refusedLines().find((l) => l.requestId === 'ci-push-41'), { timeout: 5_000 }).toMatchObject({
      level: 'info',
      actor: 'alice',
      method: 'PUT',
      path: '/v1/config',
      status: 400,
      reason: 'the change would make the config document invalid',
      problems: ['tenants.acme.tier: expected one of "gold" | "silver" | "bronze", got "platinum"'],
    })
  })

  it('two operators pushing on one ETag: one commits, the other gets a 412 with the current ETag, logged', { timeout: 30_000 }, async () => {
    const seen = await head()
    const mine = { ...seen.document, tenants: { ...(seen.document.tenants as object), initech: { tier: 'silver' } } }
    const theirs = { ...seen.document, tenants: { ...(seen.document.tenants as object), globex: { tier: 'bronze' } } }
    const [a, b] = await Promise.all([
      call('PUT', '/v1/config', { as: 'alice', body: mine, headers: { 'if-match': seen.etag, 'x-request-id': 'race-alice' } }),
      call('PUT', '/v1/config', { as: 'bob', body: theirs, headers: { 'if-match': seen.etag, 'x-request-id': 'race-bob' } }),
    ])
    expect([a.status, b.status].sort()).toEqual([200, 412])
    const [won, lost] = a.status === 200 ? [a, b] : [b, a]
    const now = await head()
    expect(now.version).toBe(seen.version + 1)
    expect(lost.json.current).toBe(now.etag)
    expect(won.headers.etag).toBe(now.etag)
    const loser = a.status === 412 ? 'alice' : 'bob'
    await expect.poll(() => refusedLines().find((l) => l.requestId === `race-${loser}`), { timeout: 5_000 }).toMatchObject({ actor: loser, status: 412, current: now.etag })
  })

  it('If-Match with the current ETag made weak (nginx gzip) is a 412 that says so, not "someone changed it"', { timeout: 30_000 }, async () => {
    const seen = await head()
    const next = { ...seen.document, tenants: { ...(seen.document.tenants as object), hooli: { tier: 'gold' } } }
    const weak = await call('PUT', '/v1/config', { as: 'alice', body: next, headers: { 'if-match': `W/${seen.etag}` } })
    expect(weak.status).toBe(412)
    expect(weak.json.current).toBe(seen.etag)
    expect(String(weak.json.detail)).not.toMatch(/someone changed it/)
    expect(String(weak.json.detail)).toMatch(/made weak.*compares strongly.*without W\//)
    // The same for a rollback, and for one item; what `current` names is taken.
    const rb = await call('POST', '/v1/config/rollback', { as: 'alice', body: { version: 1 }, headers: { 'if-match': `W/${seen.etag}` } })
    expect(rb.status).toBe(412)
    expect(String(rb.json.detail)).toMatch(/made weak/)
    const ok = await call('PUT', '/v1/config', { as: 'alice', body: next, headers: { 'if-match': String(weak.json.current) } })
    expect(ok.status).toBe(200)
    // Another writer's change since: still "someone changed it".
    const stale = await call('PUT', '/v1/config', { as: 'alice', body: seen.document, headers: { 'if-match': `W/${seen.etag}` } })
    expect(stale.status).toBe(412)
    expect(String(stale.json.detail)).toMatch(/someone changed it/)
  })

  it('no bearer token: 401 with a challenge that names no error; a refused token: invalid_token; a viewer cannot push', { timeout: 60_000 }, async () => {
    const before = await head()
    for (const authorization of [undefined, 'Basic YWxpY2U6cHc=']) {
      const r = await call('PUT', '/v1/config', { ...(authorization ? { authorization } : {}), body: before.document })
      expect(r.status).toBe(401)
      expect(r.json.detail).toBe(authorization ? 'expected an Authorization: Bearer <jwt> header' : 'missing bearer token (Authorization: Bearer <jwt>)')
      expect(r.headers['www-authenticate']).toBe('Bearer realm="igw-control-plane"')
      const g = await request(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }, body: '{"query":"{ quotas(tenant: \\"acme\\") { kind } }"}' })
      await g.body.text()
      expect(g.statusCode).toBe(401)
      expect(g.headers['www-authenticate']).toBe('Bearer realm="igw-control-plane"')
    }
    const forged = await call('PUT', '/v1/config', { authorization: `Bearer ${tokens.alice}x`, body: before.document })
    expect(forged.status).toBe(401)
    expect(forged.headers['www-authenticate']).toBe(`Bearer error="invalid_token", error_description="token signature does not verify"`)
    const viewer = await call('PUT', '/v1/config', { as: 'vic', body: { ...before.document, tenants: {} } })
    expect(viewer.status).toBe(403)
    expect(viewer.json.detail).toBe('admin.write on config denied: subject lacks the "admin.write" attribute')
    expect(await head()).toEqual(before)
    // The 403 has its own line (and audit entry); the 401s have no actor to name: neither is a `write refused`.
    await waitUntil(() => lines().some((l) => l.msg === 'admin.write refused' && l.actor === 'vic'), 5_000, 'the refused write logged')
    expect(refusedLines().filter((l) => l.actor === undefined || l.actor === 'vic')).toEqual([])
    // After the walk (refusals, a race, a commit) the signed chain still verifies.
    const r = spawnSync(process.execPath, [IGW_BIN, 'audit', 'verify', '--db', `sqlite:${join(dir, 'igw.db')}`, '--signing-key', join(dir, 'signing-key.pem')], { encoding: 'utf8', timeout: 30_000 })
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0)
    expect(r.stdout).toMatch(/^audit log OK: \d+ entries, chain intact, signatures valid/)
  })
})
