// The audit entry's diff against a real control plane on SQLite and on PostgreSQL:
// - a key going from absent to null (or back) is a change: `limitPerDay: null` is "no daily
//   limit", absent is "the default one"; the diff used to be empty for it (both were "null" in
//   canonical JSON), so the audit log showed a commit that changed nothing;
// - a changed key with a "." in it (a webhook header "X.Auth") made the dotted path ambiguous, and
//   GET /v1/audit, which redacts a diff value by its path for readers without write access, showed
//   that header's secret value to viewers; so did a changed element of a list of secrets
//   (`previousCursorKeys[0]`: a path ending in an index names no field).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

interface Change {
  path: string
  op: string
  before?: unknown
  after?: unknown
}
interface Entry {
  seq: number
  action: string
  resource: string
  before: unknown
  after: unknown
  diff: Change[]
  redacted?: true
}

const json = (v: unknown) => JSON.stringify(v)

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

describe.each(['sqlite', 'postgres'] as const)('audit diff on %s', (engine) => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane(engine === 'postgres' ? { db: await pg.createDatabase(`audit_diff_${Date.now()}`) } : {})
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  const lastEntry = async (resource: string, token?: string): Promise<Entry> => {
    const r = await cp.api(`/v1/audit?resource=${encodeURIComponent(resource)}&limit=1000`, token === undefined ? {} : { token })
    expect(r.status).toBe(200)
    return ((await r.json()) as { items: Entry[] }).items.at(-1)!
  }

  it('a daily limit set from absent (the default) to null (unlimited) shows in the diff', async () => {
    expect((await cp.api('/v1/quota-limits/acme', { method: 'PUT', body: json({ graphql: { rate: 10, burst: 10 } }) })).status).toBe(201)
    const r = await cp.api('/v1/quota-limits/acme', { method: 'PUT', body: json({ graphql: { rate: 10, burst: 10, limitPerDay: null } }) })
    expect(r.status).toBe(200)
    const e = await lastEntry('quota-limits/acme')
    expect(e.action).toBe('quota-limits.put')
    expect(e.after).toEqual({ graphql: { rate: 10, burst: 10, limitPerDay: null } })
    expect(e.diff).toEqual([{ path: 'graphql.limitPerDay', op: 'add', after: null }])

    // And back: null removed (the tenant falls back to the default daily limit).
    expect((await cp.api('/v1/quota-limits/acme', { method: 'PUT', body: json({ graphql: { rate: 10, burst: 10 } }) })).status).toBe(200)
    expect((await lastEntry('quota-limits/acme')).diff).toEqual([{ path: 'graphql.limitPerDay', op: 'remove', before: null }])
    // The chain still verifies.
    expect(((await (await cp.api('/v1/audit/verify')).json()) as { ok: boolean }).ok).toBe(true)
  })

  it('a webhook header whose name has a dot: its value is redacted in the diff a viewer reads', async () => {
    const sink = (secret: string) => ({ webhook: { url: 'https://hooks.example.com/igw', headers: { 'X.Auth': secret, 'X-Team': 'platform' } } })
    expect((await cp.api('/v1/alert-sinks', { method: 'PUT', body: json(sink('s3cr3t-first-value')) })).status).toBe(200)
    expect((await cp.api('/v1/alert-sinks', { method: 'PUT', body: json(sink('s3cr3t-second-value')) })).status).toBe(200)

    const viewer = await cp.token({ sub: 'vera', roles: ['viewer'] })
    const r = await cp.api('/v1/audit?resource=alert-sinks', { token: viewer })
    expect(r.status).toBe(200)
    const text = await r.text()
    expect(text).not.toContain('s3cr3t-first-value')
    expect(text).not.toContain('s3cr3t-second-value')
    const seen = (JSON.parse(text) as { items: Entry[] }).items.at(-1)!
    expect(seen.redacted).toBe(true)
    // A header name is never split into path segments.
    for (const c of seen.diff) expect(c.path).not.toMatch(/X\.Auth|\.Auth$/)

    // The admin's entry still says what changed, with a path that names the headers map.
    const full = await lastEntry('alert-sinks')
    expect(full.diff).toEqual([
      {
        path: 'webhook.headers',
        op: 'replace',
        before: { 'X.Auth': 's3cr3t-first-value', 'X-Team': 'platform' },
        after: { 'X.Auth': 's3cr3t-second-value', 'X-Team': 'platform' },
      },
    ])
    // Headers with plain names keep their leaf paths.
    expect((await cp.api('/v1/alert-sinks', { method: 'PUT', body: json({ webhook: { url: 'https://hooks.example.com/igw', headers: { 'X.Auth': 's3cr3t-second-value', 'X-Team': 'billing' } } }) })).status).toBe(200)
    expect((await lastEntry('alert-sinks')).diff).toEqual([{ path: 'webhook.headers.X-Team', op: 'replace', before: 'platform', after: 'billing' }])
  })

  it('a rotated cursor key in previousCursorKeys is redacted in the diff a viewer reads', async () => {
    const keys = (a: string) => ({ cursorKey: 'current-cursor-key-0123456789abcdef0123', previousCursorKeys: [a, 'older-cursor-key-0123456789abcdef012345'] })
    expect((await cp.api('/v1/subscriptions', { method: 'PUT', body: json(keys('retired-cursor-key-AAAAAAAAAAAAAAAAAAAAAAAA')) })).status).toBe(200)
    expect((await cp.api('/v1/subscriptions', { method: 'PUT', body: json(keys('retired-cursor-key-BBBBBBBBBBBBBBBBBBBBBBBB')) })).status).toBe(200)
    const viewer = await cp.token({ sub: 'vera', roles: ['viewer'] })
    const r = await cp.api('/v1/audit?resource=subscriptions', { token: viewer })
    expect(r.status).toBe(200)
    const text = await r.text()
    expect(text).not.toContain('retired-cursor-key-')
    expect(text).not.toContain('older-cursor-key-')
    expect(text).not.toContain('current-cursor-key-')
    // The admin sees the change as a replacement of the list, named by the list.
    const full = await lastEntry('subscriptions')
    expect(full.diff).toEqual([
      {
        path: 'previousCursorKeys',
        op: 'replace',
        before: ['retired-cursor-key-AAAAAAAAAAAAAAAAAAAAAAAA', 'older-cursor-key-0123456789abcdef012345'],
        after: ['retired-cursor-key-BBBBBBBBBBBBBBBBBBBBBBBB', 'older-cursor-key-0123456789abcdef012345'],
      },
    ])
  })

  it('a tenant named "constructor" added through PUT /v1/config is an add in the diff', async () => {
    const head = (await (await cp.api('/v1/config')).json()) as { document: { tenants: Record<string, unknown> } }
    const doc = { ...head.document, tenants: { ...head.document.tenants, constructor: { tier: 'bronze' } } }
    expect((await cp.api('/v1/config', { method: 'PUT', body: json(doc) })).status).toBe(200)
    const e = await lastEntry('config')
    expect(e.diff).toEqual([{ path: 'tenants.constructor', op: 'add', after: { tier: 'bronze' } }])
  })
})
