// The GraphQL admin endpoint's limits, against a real control plane over HTTP with real tokens:
// each refusal names its limit, answers 400 (413 for the body) before any resolver runs, is
// logged and counted; what an administrator legitimately sends still works; an unexpected error
// is masked toward the client but logged with the request id. The pure document checks too.
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { getIntrospectionQuery, parse } from 'graphql'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_GRAPHQL_LIMITS, checkDocument, scanDocument } from '../../control-plane/graphql-limits.ts'
import { capturingLogger, metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

interface GqlError {
  message: string
  locations?: { line: number; column: number }[]
  extensions: { code: string; limit?: string; max?: number; requestId?: string }
}
interface GqlBody {
  data?: unknown
  errors?: GqlError[]
}

const aliases = (n: number, field = 'quotas(tenant: "acme") { kind usedToday }') => `{ ${Array.from({ length: n }, (_, i) => `a${i}: ${field}`).join(' ')} }`
const nested = (levels: number) => `{ quotas(tenant: "acme") ${'{ kind '.repeat(levels)}${'}'.repeat(levels)} }`

describe('GraphQL admin limits (real control plane)', () => {
  let cp: TestControlPlane
  const log = capturingLogger()
  let viewer: string
  let operator: string

  async function gql(query: string, opts: { token?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: GqlBody; headers: Headers }> {
    const res = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query }), token: opts.token ?? viewer, headers: opts.headers ?? {} })
    return { status: res.status, body: (await res.json()) as GqlBody, headers: res.headers }
  }

  async function auditCount(): Promise<number> {
    const res = await cp.api('/v1/audit?limit=1000')
    return ((await res.json()) as { items: unknown[] }).items.length
  }

  async function refusals(limit: string): Promise<number> {
    const text = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
    return metricSample(text, 'igw_control_plane_graphql_refusals_total', { limit }) ?? Number.NaN
  }

  /** A refusal: the status, one error naming the limit, and no `data` (execution never began). */
  function expectRefused(r: { status: number; body: GqlBody }, limit: string, message: RegExp, status = 400): GqlError {
    expect(r.status).toBe(status)
    expect(r.body).not.toHaveProperty('data')
    expect(r.body.errors).toHaveLength(1)
    const err = r.body.errors![0]!
    expect(err.message).toMatch(message)
    expect(err.extensions).toMatchObject({ code: status === 413 ? 'PAYLOAD_TOO_LARGE' : 'GRAPHQL_VALIDATION_FAILED', limit })
    return err
  }

  beforeAll(async () => {
    cp = await startTestControlPlane({ logger: log.logger })
    viewer = await cp.token({ sub: 'vera', roles: ['viewer'] })
    operator = await cp.token({ sub: 'otto', roles: ['operator'] })
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('legitimate queries pass: quotas, 30 aliases, variables with an operation name, the standard introspection query', async () => {
    const one = await gql('{ quotas(tenant: "acme") { kind limitPerDay usedToday tenant } }')
    expect(one).toMatchObject({ status: 200, body: { data: { quotas: [] } } })
    const thirty = await gql(aliases(30))
    expect(thirty.status).toBe(200)
    expect(Object.keys(thirty.body.data as object)).toHaveLength(30)
    const named = await cp.api('/graphql', { method: 'POST', token: viewer, body: JSON.stringify({ query: 'query A($t: String) { quotas(tenant: $t) { kind } } query B { __typename }', operationName: 'A', variables: { t: 'globex' } }) })
    expect(await named.json()).toEqual({ data: { quotas: [] } })
    // 15 levels deep (TypeRef follows ofType nine times): what GraphQL tooling sends.
    const intro = await gql(getIntrospectionQuery())
    expect(intro.status).toBe(200)
    expect((intro.body.data as { __schema: { queryType: { name: string } } }).__schema.queryType.name).toBe('Query')
  })

  it('one mutation field per request: two commit nothing (no version, no audit entry); one commits one version', async () => {
    const version = cp.store.head()!.version
    const audited = await auditCount()
    const before = await refusals('mutationFields')
    const two = await gql('mutation { a: setQuota(kind: "ingest", limitPerDay: 1, tenant: "acme") { kind } b: setQuota(kind: "graphql", limitPerDay: 2, tenant: "acme") { kind } }', { token: operator })
    const err = expectRefused(two, 'mutationFields', /^the anonymous mutation has 2 mutation fields; at most 1 per request, because each one commits its own config version and audit entry/)
    expect(err.extensions.max).toBe(1)
    expect(err.locations).toEqual([{ line: 1, column: 1 }])
    // The same through a fragment, and through setDlpPreset beside setQuota.
    const viaFragment = await gql('mutation M { ...Two } fragment Two on Mutation { setQuota(kind: "ingest", limitPerDay: 3, tenant: "acme") { kind } setDlpPreset(preset: "mask_basic", tenant: "acme") }', { token: operator })
    expectRefused(viaFragment, 'mutationFields', /^mutation "M" has 2 mutation fields/)
    expect(cp.store.head()!.version).toBe(version)
    expect(await auditCount()).toBe(audited)
    expect(await refusals('mutationFields')).toBe(before + 2)
    // One mutation (with __typename beside it) still commits exactly one version.
    const one = await gql('mutation { __typename setQuota(kind: "ingest", limitPerDay: 250, tenant: "acme") { kind limitPerDay } }', { token: operator })
    expect(one).toMatchObject({ status: 200, body: { data: { __typename: 'Mutation', setQuota: { kind: 'ingest', limitPerDay: 250 } } } })
    expect(cp.store.head()!.version).toBe(version + 1)
    expect(await auditCount()).toBe(audited + 1)
  })

  it('aliases beyond 30 are refused before any resolver runs, and the refusal is logged with the request id', async () => {
    // A tenant-scoped viewer asking for another tenant: had a resolver run, each alias would be FORBIDDEN.
    const scoped = await cp.token({ sub: 'sam', roles: ['viewer'], tenant: 'globex' })
    const r = await gql(aliases(31), { token: scoped, headers: { 'x-request-id': 'alias-probe-1' } })
    const err = expectRefused(r, 'aliases', /^the anonymous query uses 31 aliases; the alias limit is 30$/)
    expect(err.extensions.max).toBe(30)
    expect(r.headers.get('x-request-id')).toBe('alias-probe-1')
    expect(log.lines).toContainEqual(expect.objectContaining({ level: 40, msg: 'graphql request refused by a limit', requestId: 'alias-probe-1', sub: 'sam', limit: 'aliases', max: 30 }))
    // Aliases in a fragment count each time it is spread.
    const frag = `fragment Q on Query { ${Array.from({ length: 10 }, (_, i) => `f${i}: quotas(tenant: "acme") { kind }`).join(' ')} } { ...Q ... on Query { ...Q ...Q } x: __typename }`
    expectRefused(await gql(frag), 'aliases', /uses 31 aliases/)
    // The sweep's request shape: 100k aliases (4.6 MB) now costs a refusal, not 13 s of the event loop.
    const huge = await gql(aliases(100_000))
    expectRefused(huge, 'bodyBytes', /^request body is \d+ bytes, over the GraphQL body limit of 4194304 bytes$/, 413)
  })

  it('a 3000-level document is a 400 naming the depth limit, not a 500; 16 levels of fields are refused, 15 pass', async () => {
    const deep = await gql(nested(3000), { headers: { accept: 'application/json' } })
    const err = expectRefused(deep, 'depth', /^the GraphQL document nests brackets more than 32 levels deep; the depth limit is 15 nested fields$/)
    expect(err.locations).toHaveLength(1)
    // Within the bracket bound, the field depth decides (through fragments too).
    const ofType = (n: number) => `${'ofType { '.repeat(n)}name${' }'.repeat(n)}`
    const d16 = `{ __schema { types { fields { type { ...T } } } } } fragment T on __Type { ${ofType(11)} }`
    expectRefused(await gql(d16), 'depth', /^the anonymous query nests fields 16 levels deep; the depth limit is 15$/)
    const d15 = `{ __schema { types { fields { type { ...T } } } } } fragment T on __Type { ${ofType(10)} }`
    expect((await gql(d15)).status).toBe(200)
  })

  it('document size and token count are refused before parsing', async () => {
    const long = await gql(`{ quotas(tenant: "${'a'.repeat(40_000)}") { kind } }`)
    expectRefused(long, 'documentChars', /^the GraphQL document is 40031 characters long; the document size limit is 32768$/)
    // 1001 tokens within 32 KiB: `__typename` 999 times plus the braces.
    const tokens = await gql(`{ ${'__typename '.repeat(999)}}`)
    expectRefused(tokens, 'tokens', /^the GraphQL document has more than 1000 tokens \(the token limit\)$/)
    // Comments are not tokens.
    expect((await gql(`# ${'x'.repeat(20_000)}\n{ __typename }`)).status).toBe(200)
  })

  it('bodies over 4 MiB: 413 from Content-Length before reading, and from a chunked stream while reading', async () => {
    const big = JSON.stringify({ query: '{ __typename }', variables: { pad: 'x'.repeat(4 * 1024 * 1024) } })
    const declared = await cp.api('/graphql', { method: 'POST', token: viewer, body: big })
    expectRefused({ status: declared.status, body: (await declared.json()) as GqlBody }, 'bodyBytes', /over the GraphQL body limit of 4194304 bytes/, 413)
    const chunked = await new Promise<{ status: number; body: GqlBody }>((resolve, reject) => {
      const url = new URL('/graphql', cp.url)
      const req = httpRequest(url, { method: 'POST', headers: { authorization: `Bearer ${viewer}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as GqlBody }))
      })
      req.on('error', reject)
      for (let i = 0; i < big.length; i += 64 * 1024) req.write(big.slice(i, i + 64 * 1024))
      req.end()
    })
    expectRefused(chunked, 'bodyBytes', /^request body is larger than the GraphQL body limit of 4194304 bytes$/, 413)
    // Just under the limit is read and executed.
    const under = JSON.stringify({ query: '{ __typename }', variables: { pad: 'x'.repeat(4 * 1024 * 1024 - 100) } })
    const ok = await cp.api('/graphql', { method: 'POST', token: viewer, body: under })
    expect(await ok.json()).toEqual({ data: { __typename: 'Query' } })
  })

  it('/healthz keeps answering while a huge document is refused', async () => {
    // 75k aliases, 3.6 MB (just under the body limit): before the limits this held the event
    // loop for seconds (parse, validation, 75k resolver calls). The server shares this process's
    // event loop, so a stall shows as a gap between probes wherever it falls.
    const query = aliases(75_000)
    let done = false
    const big = gql(query).finally(() => (done = true))
    let worstGap = 0
    let last = performance.now()
    let probes = 0
    while (!done || probes < 5) {
      const h = await fetch(`${cp.url}/healthz`)
      expect(h.status).toBe(200)
      const now = performance.now()
      worstGap = Math.max(worstGap, now - last)
      last = now
      probes++
      await new Promise((r) => setTimeout(r, 20))
    }
    const refused = await big
    expect(worstGap).toBeLessThan(1_000)
    expectRefused(refused, 'documentChars', /document size limit is 32768/)
  })

  it('refusals are counted by limit', async () => {
    const text = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
    for (const limit of ['bodyBytes', 'documentChars', 'tokens', 'depth', 'aliases', 'mutationFields']) {
      expect(metricSample(text, 'igw_control_plane_graphql_refusals_total', { limit })).toBeGreaterThan(0)
    }
  })

  it('an unexpected resolver error (the tenants table gone) is masked for the client and logged with the request id', async () => {
    // A second connection to the same SQLite file takes the table away under the running server.
    const db = new DatabaseSync(join(cp.dir, 'igw.db'))
    db.exec('PRAGMA busy_timeout = 5000')
    db.exec('ALTER TABLE tenants RENAME TO tenants_gone')
    try {
      const r = await gql('{ quotas(tenant: "acme") { kind } }', { headers: { 'x-request-id': 'lost-table-7' } })
      expect(r.body.errors).toEqual([{ message: 'Unexpected error.', locations: [{ line: 1, column: 3 }], path: ['quotas'], extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: 'lost-table-7' } }])
      expect(r.headers.get('x-request-id')).toBe('lost-table-7')
    } finally {
      db.exec('ALTER TABLE tenants_gone RENAME TO tenants')
      db.close()
    }
    const line = log.lines.find((l) => l.msg === 'graphql request failed with an unexpected error')
    expect(line).toMatchObject({ level: 50, requestId: 'lost-table-7', sub: 'vera', path: ['quotas'], err: { message: expect.stringMatching(/no such table: tenants/) } })
    expect((line!.err as { stack: string }).stack).toMatch(/tenantIds/)
    const text = await (await fetch(`${cp.metricsUrl}/metrics`)).text()
    expect(metricSample(text, 'igw_control_plane_graphql_unexpected_errors_total')).toBe(1)
    // A request id that is not a plain token is replaced, not echoed into logs.
    const odd = await gql('{ __typename }', { headers: { 'x-request-id': 'a b\tc' } })
    expect(odd.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
  })
})

describe('document checks (pure)', () => {
  const L = ADMIN_GRAPHQL_LIMITS
  const check = (q: string) => checkDocument(parse(q), L).map((r) => `${r.limit}: ${r.message}`)

  it('scanDocument stops at the first limit crossed and leaves syntax errors to the parser', () => {
    expect(scanDocument('{ quotas { kind } }', L)).toBeUndefined()
    expect(scanDocument(`{ ${'[ '.repeat(40)}`, L)).toMatchObject({ limit: 'depth', position: 2 + 31 * 2 })
    expect(scanDocument('{ "unterminated', L)).toBeUndefined()
    expect(scanDocument(`{ ${'a '.repeat(2000)}`, L)).toMatchObject({ limit: 'tokens', max: 1000 })
    expect(scanDocument('x'.repeat(L.maxDocumentChars + 1), L)).toMatchObject({ limit: 'documentChars' })
  })

  it('depth and aliases go through fragments; cycles and unknown fragments end the walk', () => {
    expect(check('{ a { b { c } } }')).toEqual([])
    expect(checkDocument(parse(`{ ...F } fragment F on Query { ${'x { '.repeat(16)}y${' }'.repeat(16)} }`), L)).toMatchObject([{ limit: 'depth', message: 'the anonymous query nests fields 17 levels deep; the depth limit is 15' }])
    expect(check('{ ...A } fragment A on Query { ...B x: y } fragment B on Query { ...A }')).toEqual([])
    expect(check('{ ...Missing }')).toEqual([])
    // A fragment spread twice per level, five levels: 2^5 spreads of the one alias in the last.
    const bomb = ['{ ...F0 }', ...Array.from({ length: 5 }, (_, i) => `fragment F${i} on Query { ...F${i + 1} ...F${i + 1} }`), 'fragment F5 on Query { a: b }'].join(' ')
    expect(check(bomb)).toEqual(['aliases: the anonymous query uses 32 aliases; the alias limit is 30'])
  })

  it('every operation is checked, and mutation fields count only in mutations', () => {
    expect(check(`query Q { ${Array.from({ length: 3 }, (_, i) => `f${i}: x`).join(' ')} } mutation M { a }`)).toEqual([])
    expect(check('mutation A { a } mutation B { b c }')).toEqual(['mutationFields: mutation "B" has 2 mutation fields; at most 1 per request, because each one commits its own config version and audit entry and is pushed to every proxy: send one request per change'])
    expect(check('mutation { __typename a ... on Mutation { __typename } }')).toEqual([])
  })
})
