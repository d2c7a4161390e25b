// The published contract (GET /openapi.json) against what a real control plane does: the schemas
// compile in a validator's default strict mode, every endpoint served is described, the headers
// real responses carry are documented for their status, bodies the server accepts validate against
// the request schema, and values the parameter schemas allow are not refused as malformed.
import { DatabaseSync } from 'node:sqlite'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import { Validator } from '@seriousme/openapi-schema-validator'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { Conformance } from './openapi-conformance.ts'

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => void

interface Header {
  $ref?: string
  schema?: Record<string, unknown>
}
interface Op {
  parameters?: { name: string; in: string; schema: Record<string, unknown> }[]
  requestBody?: { content: Record<string, { schema: unknown }> }
  responses: Record<string, { headers?: Record<string, Header>; content?: Record<string, unknown> }>
}
interface Doc {
  paths: Record<string, Record<string, Op>>
  components: { schemas: Record<string, unknown>; headers?: Record<string, Header> }
}

const pointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1')

/** A validator in ajv's default mode (strict: unknown formats and keywords are errors), with the document loaded. */
function strictAjv(doc: Doc): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, allErrors: true })
  addFormats(ajv)
  // The document itself is a container for $refs, not a schema.
  ajv.addKeyword('paths')
  ajv.addKeyword('components')
  ajv.addSchema({ $id: 'openapi.json', paths: doc.paths, components: doc.components })
  return ajv
}

/** Headers of the contract (conditional requests, auth, retries, paging, ids): present in a real response, they must be documented for its status. */
const CONTRACT_HEADERS = ['etag', 'www-authenticate', 'retry-after', 'link', 'location', 'allow', 'x-request-id']

function documentedHeaders(doc: Doc, method: string, template: string, status: number): Map<string, Header> {
  const resp = doc.paths[template]?.[method.toLowerCase()]?.responses[String(status)]
  const out = new Map<string, Header>()
  for (const [name, h] of Object.entries(resp?.headers ?? {})) {
    const resolved = h.$ref ? doc.components.headers?.[h.$ref.split('/').at(-1)!] : h
    if (resolved) out.set(name.toLowerCase(), resolved)
  }
  return out
}

describe('the OpenAPI document describes what the control plane does', () => {
  let cp: TestControlPlane
  let doc: Doc
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane()
    doc = (await (await fetch(`${cp.url}/openapi.json`)).json()) as Doc
    oa = new Conformance(doc)
  })
  afterAll(async () => {
    await cp?.close()
  })

  /** The body checked by the shared conformance helper, and the contract headers against the document. */
  async function check(res: Response, method: string, template: string): Promise<unknown> {
    const documented = documentedHeaders(doc, method, template, res.status)
    for (const name of CONTRACT_HEADERS) {
      const value = res.headers.get(name)
      if (value === null) continue
      const h = documented.get(name)
      expect(h, `${method} ${template} ${res.status} sends ${name}: ${value}, which the document does not list for it`).toBeDefined()
      if (h?.schema?.type === 'integer') expect(value, `${name} is documented as an integer`).toMatch(/^\d+$/)
    }
    return oa.check(res, method, template)
  }

  it('is valid OpenAPI 3.1, and every schema in it compiles in a strict JSON Schema validator (no formats of zod’s own, such as "starts_with")', async () => {
    const result = await new Validator().validate(doc as never)
    expect(result.errors ?? []).toEqual([])
    const ajv = strictAjv(doc)
    const failures: string[] = []
    const compile = (where: string, ref: string) => {
      try {
        ajv.compile({ $ref: ref })
      } catch (err) {
        failures.push(`${where}: ${(err as Error).message.slice(0, 200)}`)
      }
    }
    for (const name of Object.keys(doc.components.schemas)) compile(name, `openapi.json#/components/schemas/${name}`)
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const base = `openapi.json#/paths/${pointer(path)}/${method}`
        for (const type of Object.keys(op.requestBody?.content ?? {})) compile(`${method} ${path} body`, `${base}/requestBody/content/${pointer(type)}/schema`)
        op.parameters?.forEach((p, i) => compile(`${method} ${path} ${p.name}`, `${base}/parameters/${i}/schema`))
      }
    }
    expect(failures).toEqual([])
    // The route's path prefix still says "starts with /" (the pattern zod writes beside its format).
    const route = ajv.getSchema('openapi.json#/components/schemas/RouteConfig')!
    expect(route({ upstream: 'backend', match: { pathPrefix: 'api' } })).toBe(false)
    expect(route({ upstream: 'backend', match: { pathPrefix: '/api' } })).toBe(true)
  })

  it('GET /openapi.json and GET /graphql, which the server answers, are in it — with the GraphQL statuses a client meets', async () => {
    expect(Object.keys(doc.paths['/openapi.json'] ?? {})).toEqual(['get'])
    expect((await check(await fetch(`${cp.url}/openapi.json`), 'GET', '/openapi.json')) as { openapi: string }).toMatchObject({ openapi: '3.1.0' })
    const q = encodeURIComponent('{ quotas(tenant: "acme") { kind limitPerDay } }')
    const get = await cp.api(`/graphql?query=${q}`)
    expect(get.status).toBe(200)
    expect(await check(get, 'GET', '/graphql')).toEqual({ data: { quotas: [] } })
    const gre = await cp.api(`/graphql?query=${q}`, { headers: { accept: 'application/graphql-response+json' } })
    expect(gre.status).toBe(200)
    await check(gre, 'GET', '/graphql')
    // A mutation over GET: 405 with Allow.
    const mutation = await cp.api(`/graphql?query=${encodeURIComponent('mutation { setDlpPreset(preset: "mask_basic") }')}`)
    expect(mutation.status).toBe(405)
    expect(mutation.headers.get('allow')).toBe('POST')
    await check(mutation, 'GET', '/graphql')
    const unacceptable = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: '{ __typename }' }), headers: { accept: 'application/xml' } })
    expect(unacceptable.status).toBe(406)
    await check(unacceptable, 'POST', '/graphql')
    // The document itself as the body (application/graphql), which the server takes.
    const plain = await cp.api('/graphql', { method: 'POST', body: '{ __typename }', headers: { 'content-type': 'application/graphql' } })
    expect(plain.status).toBe(200)
    expect(doc.paths['/graphql']!.post!.requestBody!.content).toHaveProperty(['application/graphql'])
    await check(plain, 'POST', '/graphql')
    const anonymous = await fetch(`${cp.url}/graphql?query=${q}`)
    expect(anonymous.status).toBe(401)
    await check(anonymous, 'GET', '/graphql')
  })

  it('the headers real responses carry (WWW-Authenticate, the current ETag of a 412, Retry-After, x-request-id) are documented for their status', async () => {
    // 401: the Bearer challenge, on a REST route and on /graphql.
    const none = await cp.api('/v1/tenants', { token: '' })
    expect(none.status).toBe(401)
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /)
    await check(none, 'GET', '/v1/tenants')
    const gql = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: '{ __typename }' }), token: '' })
    expect(gql.status).toBe(401)
    await check(gql, 'POST', '/graphql')
    // 412: the current ETag, to read again and retry with.
    const stale = await cp.api('/v1/tenants/acme', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }), headers: { 'if-match': '"not-the-etag"' } })
    expect(stale.status).toBe(412)
    expect(stale.headers.get('etag')).toMatch(/^"/)
    await check(stale, 'PUT', '/v1/tenants/{id}')
    const staleConfig = await cp.api('/v1/config/rollback', { method: 'POST', body: JSON.stringify({ version: 1 }), headers: { 'if-match': '"not-the-etag"' } })
    expect(staleConfig.status).toBe(412)
    await check(staleConfig, 'POST', '/v1/config/rollback')
    // 503 with Retry-After: the database does not answer (SQLite locked by another connection past its busy timeout).
    const other = new DatabaseSync(cp.dbSpec.slice('sqlite:'.length))
    other.exec('BEGIN IMMEDIATE')
    try {
      const busy = await cp.api('/v1/tenants/locked', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
      expect(busy.status).toBe(503)
      expect(busy.headers.get('retry-after')).toBe('5')
      await check(busy, 'PUT', '/v1/tenants/{id}')
    } finally {
      other.exec('ROLLBACK')
      other.close()
    }
    // Every response names its request id: a 200 of a public route, a 404, a created item.
    await check(await fetch(`${cp.url}/healthz`), 'GET', '/healthz')
    await check(await cp.api('/v1/tenants/nobody'), 'GET', '/v1/tenants/{id}')
    await check(await cp.api('/v1/upstreams/other', { method: 'PUT', body: JSON.stringify({ url: 'http://127.0.0.1:9' }) }), 'PUT', '/v1/upstreams/{id}')
  }, 30_000)

  it('a body the server takes validates against the published request schema (a route’s or a filter’s name comes from the path; an ACK’s digest may be null)', async () => {
    const ajv = strictAjv(doc)
    const bodySchema = (method: string, path: string) => ajv.compile({ $ref: `openapi.json#/paths/${pointer(path)}/${method}/requestBody/content/application~1json/schema` })

    const route = { upstream: 'backend', filters: [{ name: 'request-id' }] }
    const putRoute = await cp.api('/v1/routes/second', { method: 'PUT', body: JSON.stringify(route) })
    expect(putRoute.status).toBe(201)
    expect(await check(putRoute, 'PUT', '/v1/routes/{id}')).toMatchObject({ id: 'second', config: { name: 'second' } })
    const routeBody = bodySchema('put', '/v1/routes/{id}')
    expect(routeBody(route), JSON.stringify(routeBody.errors)).toBe(true)

    const entry = { header: 'x-correlation-id' }
    const putFilter = await cp.api('/v1/routes/second/filters/request-id', { method: 'PUT', body: JSON.stringify(entry) })
    expect(putFilter.status).toBe(200)
    expect(await check(putFilter, 'PUT', '/v1/routes/{route}/filters/{filter}')).toMatchObject({ config: { name: 'request-id', header: 'x-correlation-id' } })
    const filterBody = bodySchema('put', '/v1/routes/{route}/filters/{filter}')
    expect(filterBody(entry), JSON.stringify(filterBody.errors)).toBe(true)
    // Still a filter entry: an unknown setting is refused by both.
    expect(filterBody({ bogus: 1 })).toBe(false)
    expect((await cp.api('/v1/routes/second/filters/request-id', { method: 'PUT', body: JSON.stringify({ bogus: 1 }) })).status).toBe(400)

    // An ACK with digest null (an older proxy's "none"): the server records it.
    const proxy = await cp.token({ sub: 'proxy-a', roles: ['proxy'] })
    const stream = new AbortController()
    const opened = await cp.api('/v1/stream?proxy=contract-a&version=0', { token: proxy, signal: stream.signal })
    expect(opened.status).toBe(200)
    try {
      const ack = { version: 1, status: 'ACK', digest: null }
      const acked = await cp.api('/v1/proxies/contract-a/ack', { method: 'POST', body: JSON.stringify(ack), token: proxy })
      expect(acked.status).toBe(204)
      await check(acked, 'POST', '/v1/proxies/{id}/ack')
      const ackBody = bodySchema('post', '/v1/proxies/{id}/ack')
      expect(ackBody(ack), JSON.stringify(ackBody.errors)).toBe(true)
    } finally {
      stream.abort()
    }

    // And one it refuses is outside the schema: a daily limit past 2^53-1 (not kept exactly).
    const tooLarge = { limitPerDay: 9007199254740992 }
    const refused = await cp.api('/v1/tenants/acme/quotas/graphql', { method: 'PUT', body: JSON.stringify(tooLarge) })
    expect(refused.status).toBe(400)
    await check(refused, 'PUT', '/v1/tenants/{id}/quotas/{kind}')
    expect(bodySchema('put', '/v1/tenants/{id}/quotas/{kind}')(tooLarge)).toBe(false)
  }, 30_000)

  it('a path parameter the published schema allows is not refused as malformed (a version is an integer, a quota kind one of four)', async () => {
    const ajv = strictAjv(doc)
    const param = (method: string, path: string, name: string) => {
      const i = doc.paths[path]![method]!.parameters!.findIndex((p) => p.name === name && p.in === 'path')
      return ajv.compile({ $ref: `openapi.json#/paths/${pointer(path)}/${method}/parameters/${i}/schema` })
    }
    // Path parameters arrive as strings; a validator of the URL coerces them as a client generator types them.
    const asTyped = (schema: { type?: unknown }, raw: string): unknown => (schema.type === 'integer' && /^\d+$/.test(raw) ? Number(raw) : raw)

    const versionSchema = doc.paths['/v1/config/versions/{version}']!.get!.parameters!.find((p) => p.name === 'version')!.schema
    const version = param('get', '/v1/config/versions/{version}', 'version')
    for (const raw of ['abc', '1.5', '-1']) {
      const r = await cp.api(`/v1/config/versions/${raw}`)
      expect(r.status).toBe(400)
      await check(r, 'GET', '/v1/config/versions/{version}')
      expect(version(asTyped(versionSchema, raw)), `version "${raw}" is refused by the server, so the schema must not allow it`).toBe(false)
    }
    expect(version(asTyped(versionSchema, '1'))).toBe(true)
    expect((await cp.api('/v1/config/versions/1')).status).toBe(200)

    const kind = param('put', '/v1/tenants/{id}/quotas/{kind}', 'kind')
    const bogus = await cp.api('/v1/tenants/acme/quotas/bogus', { method: 'PUT', body: JSON.stringify({ limitPerDay: 5 }) })
    expect(bogus.status).toBe(400)
    await check(bogus, 'PUT', '/v1/tenants/{id}/quotas/{kind}')
    expect(kind('bogus')).toBe(false)
    for (const k of ['graphql', 'ingest', 'embeddings', 'subscriptions']) {
      expect(kind(k)).toBe(true)
      const set = await cp.api(`/v1/tenants/acme/quotas/${k}`, { method: 'PUT', body: JSON.stringify({ limitPerDay: 5 }) })
      expect(set.status).toBe(201)
      await check(set, 'PUT', '/v1/tenants/{id}/quotas/{kind}')
    }
  })
  it('what a reader who may not write sees (secrets as "[redacted]") validates against the response schemas, as the writer’s whole view does', async () => {
    const secret = 'jwt-secret-0123456789abcdef0123456789'
    const route = { upstream: 'backend', filters: [{ name: 'request-id' }, { name: 'tenant', jwt: { secret, algorithms: ['HS256'] } }] }
    expect((await cp.api('/v1/routes/graphql', { method: 'PUT', body: JSON.stringify(route) })).status).toBe(200)
    const sinks = { webhook: { url: 'http://127.0.0.1:9/hook', headers: { authorization: 'Bearer hook-token' } } }
    expect((await cp.api('/v1/alert-sinks', { method: 'PUT', body: JSON.stringify(sinks) })).status).toBe(200)
    const cursorKey = 'cursor-key-0123456789abcdef0123456789'
    expect((await cp.api('/v1/subscriptions', { method: 'PUT', body: JSON.stringify({ cursorKey, previousCursorKeys: [`${cursorKey}-old`] }) })).status).toBe(200)
    const reads: [string, string][] = [
      ['/v1/config', '/v1/config'],
      ['/v1/routes', '/v1/routes'],
      ['/v1/routes/graphql', '/v1/routes/{id}'],
      ['/v1/routes/graphql/filters/tenant', '/v1/routes/{route}/filters/{filter}'],
      ['/v1/alert-sinks', '/v1/alert-sinks'],
      ['/v1/subscriptions', '/v1/subscriptions'],
    ]
    const viewer = await cp.token({ sub: 'vic', roles: ['viewer'] })
    for (const [path, template] of reads) {
      const shown = await cp.api(path, { token: viewer })
      expect(shown.status).toBe(200)
      const text = JSON.stringify(await check(shown, 'GET', template))
      expect(text).toContain('[redacted]')
      for (const s of [secret, 'hook-token', cursorKey]) expect(text).not.toContain(s)
      const whole = await cp.api(path)
      expect(whole.status).toBe(200)
      expect(JSON.stringify(await check(whole, 'GET', template))).not.toContain('[redacted]')
    }
    const version = ((await (await cp.api('/v1/config')).json()) as { version: number }).version
    await check(await cp.api(`/v1/config/versions/${version}`, { token: viewer }), 'GET', '/v1/config/versions/{version}')
  })

  it('every operation, called as clients get it wrong (no token, another role, unknown ids, bad encodings, a NUL in any query value, bad bodies), answers a documented status, body and headers', async () => {
    const tokens = { viewer: await cp.token({ roles: ['viewer'] }), proxy: await cp.token({ roles: ['proxy'] }), scoped: await cp.token({ roles: ['operator'], tenant: 'acme' }) }
    const ids: Record<string, string> = { id: 'acme', route: 'graphql', filter: 'tenant', kind: 'graphql', version: '1' }
    const problems: string[] = []
    for (const [template, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) {
        const method = m.toUpperCase()
        const path = template.replace(/\{(\w+)\}/g, (_x, n: string) => ids[n] ?? 'x')
        const body = op.requestBody ? { body: '{}' } : {}
        const cases: [string, string, RequestInit & { token?: string }][] = [
          ['none', path, { method, token: '', ...body }],
          ['viewer', path, { method, token: tokens.viewer, ...body }],
          ['proxy', path, { method, token: tokens.proxy, ...body }],
          ['scoped', path, { method, token: tokens.scoped, ...body }],
          ['badenc', template.replace(/\{(\w+)\}/g, '%E0%A4%A'), { method, ...body }],
          ['nul', `${path}?x=%00`, { method, ...body }],
        ]
        // The config stream answers 200 and stays open: only its refusals here.
        if (template !== '/v1/stream') cases.push(['admin', path, { method, ...body }], ['unknown', template.replace(/\{(\w+)\}/g, 'nope'), { method, ...body }])
        if (op.requestBody) {
          cases.push(['text/plain', path, { method, body: '{}', headers: { 'content-type': 'text/plain' } }], ['not JSON', path, { method, body: '{' }], ['array', path, { method, body: '[]' }], ['null', path, { method, body: 'null' }])
        }
        if (op.parameters?.some((p) => p.name === 'If-Match')) cases.push(['If-Match W/*', path, { method, ...body, headers: { 'if-match': 'W/*' } }])
        for (const [label, target, init] of cases) {
          // /graphql is yoga's (its answers are checked above); only its refusal before yoga here.
          if (template === '/graphql' && label !== 'none') continue
          const res = await cp.api(target, init)
          if (res.status === 500) problems.push(`${label}: ${method} ${target} answered 500`)
          try {
            await check(res, method, template)
          } catch (err) {
            problems.push(`${label}: ${(err as Error).message.split('\n')[0]!.slice(0, 300)}`)
          }
        }
      }
    }
    expect(problems).toEqual([])
  }, 120_000)
})
