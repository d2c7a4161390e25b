// Input the control plane must refuse cleanly (4xx naming what was wrong), never with a 500 or a
// database's own error text: deep JSON, malformed percent-encoding, integers out of range, NUL,
// "__proto__" as an id, If-Match syntax; and HEAD where GET exists. Real HTTP against a real
// control plane over real SQLite and PostgreSQL; every answer is checked against the OpenAPI document.
import { DatabaseSync } from 'node:sqlite'
import { request } from 'node:http'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capturingLogger, metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { Conformance } from './openapi-conformance.ts'

let pgServer: TestPostgres
beforeAll(async () => {
  pgServer = await startPostgres()
})
afterAll(async () => {
  await pgServer?.close()
})

const engines = [
  { name: 'sqlite', db: async () => undefined },
  { name: 'postgres', db: async () => pgServer.createDatabase(`igw_ih_${Math.random().toString(36).slice(2, 8)}`) },
]

const json = (v: unknown) => JSON.stringify(v)
/** `{"<key>": [[[…]]]}`: `levels` nested arrays inside one object, about 2 bytes a level. */
const deepBody = (levels: number, key = 'description') => `{"${key}":${'['.repeat(levels)}${']'.repeat(levels)}}`

/** A raw request whose path is sent exactly as given (fetch would normalize or refuse it). */
function rawRequest(url: string, path: string, token: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET', headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

describe.each(engines)('input hardening on $name', (engine) => {
  let cp: TestControlPlane
  let oa: Conformance
  let admin: string
  let proxy: string
  const logs = capturingLogger()
  beforeAll(async () => {
    const db = await engine.db()
    cp = await startTestControlPlane({ ...(db ? { db } : {}), logger: logs.logger })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
    admin = await cp.token({ sub: 'hardening-admin', roles: ['admin'] })
    proxy = await cp.token({ sub: 'hardening-proxy', roles: ['proxy'] })
  })
  afterAll(async () => {
    await cp?.close()
  })

  const auditCount = async () => ((await (await cp.api('/v1/audit?limit=1000', { token: admin })).json()) as { items: unknown[] }).items.length
  const metrics = async () => (await fetch(`${cp.metricsUrl}/metrics`)).text()

  it('JSON nested deeper than 128 levels is a 400 on every write endpoint, not a stack overflow; 128 levels still pass', async () => {
    const before = { version: cp.store.head()!.version, audit: await auditCount() }
    const writes: [string, string, string, string?][] = [
      ['PUT', '/v1/config', '/v1/config'],
      ['PUT', '/v1/tenants/deep', '/v1/tenants/{id}'],
      ['PUT', '/v1/upstreams/deep', '/v1/upstreams/{id}'],
      ['PUT', '/v1/routes/deep', '/v1/routes/{id}'],
      ['PUT', '/v1/quota-limits/acme', '/v1/quota-limits/{id}'],
      ['PUT', '/v1/budgets/acme', '/v1/budgets/{id}'],
      ['PUT', '/v1/dlp-presets/deep', '/v1/dlp-presets/{id}'],
      ['PUT', '/v1/persisted-documents/deep', '/v1/persisted-documents/{id}'],
      ['PUT', '/v1/quota-defaults', '/v1/quota-defaults'],
      ['PUT', '/v1/dlp', '/v1/dlp'],
      ['PUT', '/v1/subscriptions', '/v1/subscriptions'],
      ['PUT', '/v1/routes/graphql/filters/cache', '/v1/routes/{route}/filters/{filter}'],
      ['PUT', '/v1/tenants/acme/quotas/graphql', '/v1/tenants/{id}/quotas/{kind}'],
      ['POST', '/v1/config/rollback', '/v1/config/rollback'],
      ['POST', '/v1/policies/admin/decide', '/v1/policies/admin/decide'],
      ['POST', '/v1/dlp/detokenize', '/v1/dlp/detokenize'],
      ['POST', '/v1/proxies/p1/ack', '/v1/proxies/{id}/ack', proxy],
      ['POST', '/v1/usage', '/v1/usage', proxy],
    ]
    for (const [method, path, template, token] of writes) {
      const r = await cp.api(path, { method, body: deepBody(3000), token: token ?? admin, headers: { 'x-justification': 'a deep body, for the test' } })
      expect(r.status, `${method} ${path}`).toBe(400)
      expect(await oa.check(r, method, template), `${method} ${path}`).toMatchObject({ status: 400, detail: 'body nests objects/arrays deeper than 128 levels' })
    }
    // Nothing was committed or audited, and the service is fine.
    expect(cp.store.head()!.version).toBe(before.version)
    expect(await auditCount()).toBe(before.audit)
    expect((await fetch(`${cp.url}/healthz`)).status).toBe(200)

    // The boundary: a body 128 levels deep (the object plus 127 arrays) is read; 129 is not.
    const decide = (body: string) => cp.api('/v1/policies/admin/decide', { method: 'POST', body, token: admin })
    const at = await decide(`{"subject":{"sub":"x","roles":["viewer"]},"action":"admin.read","resource":{"type":"config"},"context":{"x":${'['.repeat(126)}${']'.repeat(126)}}}`)
    expect(await oa.check(at, 'POST', '/v1/policies/admin/decide')).toMatchObject({ allow: true })
    const over = await decide(`{"subject":{"sub":"x","roles":["viewer"]},"action":"admin.read","resource":{"type":"config"},"context":{"x":${'['.repeat(127)}${']'.repeat(127)}}}`)
    expect(over.status).toBe(400)
  })

  it('a deep plugin upload is refused as malformed: 400, audited as plugins.reject and counted', async () => {
    const counted = () => metrics().then((t) => metricSample(t, 'igw_plugin_upload_rejections_total', { reason: 'malformed' }) ?? 0)
    const before = await counted()
    const r = await cp.api('/v1/plugins', { method: 'POST', body: deepBody(3000, 'name'), token: admin })
    expect(await oa.check(r, 'POST', '/v1/plugins')).toMatchObject({ status: 400, reason: 'malformed', detail: expect.stringContaining('deeper than 128 levels') })
    expect(await counted()).toBe(before + 1)
    const audit = (await (await cp.api('/v1/audit?resource=plugins&limit=1000', { token: admin })).json()) as { items: { action: string; after: { reason: string; detail: string } }[] }
    expect(audit.items.at(-1)).toMatchObject({ action: 'plugins.reject', after: { reason: 'malformed', detail: expect.stringContaining('deeper than 128 levels') } })
  })

  it('a path segment that is not valid percent-encoded UTF-8 is a 400 naming the parameter', async () => {
    for (const path of ['/v1/tenants/%E0%A4%A', '/v1/tenants/%', '/v1/tenants/%ED%A0%80', '/v1/tenants/a%ZZ']) {
      const r = await rawRequest(cp.url, path, admin)
      expect(r.status, path).toBe(400)
      expect(r.headers['content-type']).toMatch(/^application\/problem\+json/)
      expect(JSON.parse(r.body), path).toMatchObject({ status: 400, problems: [expect.stringMatching(/^id: .* is not valid percent-encoded UTF-8$/)] })
    }
    const put = await cp.api('/v1/tenants/%E0%A4%A', { method: 'PUT', body: json({ tier: 'gold' }), token: admin })
    expect(await oa.check(put, 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 400 })
  })

  it('integers in paths, queries and bodies are checked before SQL: out of range or not integers is a 400 naming them', async () => {
    const bad: [string, string, string, string, RequestInit?][] = [
      ['/v1/config/versions?limit=2.5', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions?limit=-1', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions?limit=abc', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions?limit=1e3', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions?limit=0', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions?limit=1001', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions?limit=', 'GET', '/v1/config/versions', 'limit'],
      ['/v1/config/versions/abc', 'GET', '/v1/config/versions/{version}', 'version'],
      ['/v1/config/versions/1.5', 'GET', '/v1/config/versions/{version}', 'version'],
      ['/v1/config/versions/-1', 'GET', '/v1/config/versions/{version}', 'version'],
      ['/v1/config/versions/99999999999999999999', 'GET', '/v1/config/versions/{version}', 'version'],
      ['/v1/config/versions/9007199254740992', 'GET', '/v1/config/versions/{version}', 'version'],
      ['/v1/audit?after=1.5', 'GET', '/v1/audit', 'after'],
      ['/v1/audit?after=1e300', 'GET', '/v1/audit', 'after'],
      ['/v1/audit?after=-1', 'GET', '/v1/audit', 'after'],
      ['/v1/audit?limit=2.5', 'GET', '/v1/audit', 'limit'],
      ['/v1/config/rollback', 'POST', '/v1/config/rollback', 'version', { method: 'POST', body: json({ version: 'abc' }) }],
      ['/v1/config/rollback', 'POST', '/v1/config/rollback', 'version', { method: 'POST', body: json({ version: 1e300 }) }],
      ['/v1/config/rollback', 'POST', '/v1/config/rollback', 'version', { method: 'POST', body: json({ version: 1.5 }) }],
      ['/v1/config/rollback', 'POST', '/v1/config/rollback', 'version', { method: 'POST', body: json({}) }],
      ['/v1/config/rollback', 'POST', '/v1/config/rollback', 'version', { method: 'POST', body: json({ version: '2' }) }],
    ]
    for (const [path, method, template, param, init] of bad) {
      const r = await cp.api(path, { ...init, token: admin })
      expect(r.status, `${method} ${path} ${String(init?.body ?? '')}`).toBe(400)
      const body = (await oa.check(r, method, template)) as { problems: string[] }
      expect(body.problems[0], path).toMatch(new RegExp(`^${param}: expected an integer`))
    }
    const proxyBad: [string, unknown, string][] = [
      ['/v1/proxies/hardening-p/ack', { version: 1e300, status: 'ACK' }, '^version: expected an integer'],
      ['/v1/proxies/hardening-p/ack', { version: 2.5, status: 'ACK' }, '^version: expected an integer'],
      ['/v1/usage', { proxyId: 'hp', bootId: 'b', seq: 1e300, at: '2026-01-01T00:00:00Z', tenants: {} }, '^seq: expected a positive integer, at most 9007199254740991$'],
      ['/v1/usage', { proxyId: 'hp', bootId: 'b', seq: 1, at: '2026-01-01T00:00:00Z', tenants: { acme: { requests: 1e300 } } }, '^tenants\\.acme\\.requests: expected a non-negative number'],
      ['/v1/usage', { proxyId: 'hp', bootId: 'b', seq: 1, at: '2026-01-01T00:00:00Z', tenants: { acme: { requests: 1, rejections: { X: 1e300 } } } }, '^tenants\\.acme\\.rejections\\.X: expected a non-negative number'],
      ['/v1/usage', { proxyId: 'hp', bootId: 'b', seq: 1, at: '2026-01-01T00:00:00Z', tenants: { acme: { requests: 1, costUnits: 1e300 } } }, '^tenants\\.acme\\.costUnits: '],
    ]
    for (const [path, body, problem] of proxyBad) {
      const r = await cp.api(path, { method: 'POST', body: json(body), token: proxy })
      expect(r.status, `${path} ${json(body)}`).toBe(400)
      if (path === '/v1/usage') expect(((await oa.check(r, 'POST', '/v1/usage')) as { problems: string[] }).problems[0]).toMatch(new RegExp(problem))
      else expect(((await oa.check(r, 'POST', '/v1/proxies/{id}/ack')) as { problems: string[] }).problems[0]).toMatch(new RegExp(problem))
    }
    // The stream refuses before it sends its 200: a problem document, not a stream that breaks.
    const stream = await cp.api('/v1/stream?proxy=hardening-s&version=1e300', { token: proxy })
    expect(await oa.check(stream, 'GET', '/v1/stream')).toMatchObject({ status: 400, problems: [expect.stringMatching(/^version: expected an integer/)] })
    // In range they work, and a version that does not exist is still a 404.
    const two = await cp.api('/v1/config/versions?limit=2', { token: admin })
    expect(((await oa.check(two, 'GET', '/v1/config/versions')) as { items: unknown[] }).items.length).toBeLessThanOrEqual(2)
    expect((await oa.check(await cp.api('/v1/audit?after=0&limit=1', { token: admin }), 'GET', '/v1/audit')) as { items: unknown[] }).toMatchObject({ items: [expect.anything()] })
    expect(await oa.check(await cp.api('/v1/config/versions/999999', { token: admin }), 'GET', '/v1/config/versions/{version}')).toMatchObject({ status: 404 })
    expect(await oa.check(await cp.api('/v1/config/rollback', { method: 'POST', body: json({ version: 999999 }), token: admin }), 'POST', '/v1/config/rollback')).toMatchObject({ status: 404, detail: 'version 999999 does not exist' })
    const usage = await cp.api('/v1/usage', { method: 'POST', body: json({ proxyId: 'hp', bootId: 'b', seq: Number.MAX_SAFE_INTEGER, at: '2026-01-01T00:00:00Z', tenants: { acme: { requests: 1, costUnits: 2.5 } } }), token: proxy })
    expect(await oa.check(usage, 'POST', '/v1/usage')).toEqual({ accepted: true, alerts: 0 })
  })

  it('NUL in ids, filters and keys is a 400 that names them, on both engines', async () => {
    const gets: [string, string, string][] = [
      ['/v1/alerts?tenant=a%00b', '/v1/alerts', 'tenant'],
      ['/v1/plugins?name=a%00b', '/v1/plugins', 'name'],
      ['/v1/audit?resource=a%00b', '/v1/audit', 'resource'],
      ['/v1/tenants/a%00b/statement', '/v1/tenants/{id}/statement', 'id'],
      ['/v1/tenants/a%00b', '/v1/tenants/{id}', 'id'],
    ]
    for (const [path, template, name] of gets) {
      const r = await cp.api(path, { token: admin })
      expect(await oa.check(r, 'GET', template), path).toMatchObject({ status: 400, problems: [`${name}: must not contain a NUL character (U+0000)`] })
    }
    const put = await cp.api('/v1/tenants/a%00b', { method: 'PUT', body: json({ tier: 'gold' }), token: admin })
    expect(await oa.check(put, 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 400, problems: ['id: must not contain a NUL character (U+0000)'] })
    const usage = await cp.api('/v1/usage', { method: 'POST', body: json({ proxyId: 'hp-nul', bootId: 'b', seq: 1, at: '2026-01-01T00:00:00Z', tenants: { 'nul\u0000x': { requests: 1 } } }), token: proxy })
    expect(await oa.check(usage, 'POST', '/v1/usage')).toMatchObject({ status: 400, problems: ['tenants["nul\\u0000x"]: must not contain a NUL character (U+0000)'] })
    const key = await cp.api('/v1/usage', { method: 'POST', body: json({ proxyId: 'hp-nul', bootId: 'b', seq: 1, at: '2026-01-01T00:00:00Z', tenants: { acme: { requests: 1, rejections: { 'A\u0000B': 1 } } } }), token: proxy })
    expect(await oa.check(key, 'POST', '/v1/usage')).toMatchObject({ status: 400 })
    // A NACK's error text is the proxy's message: kept, with NUL made visible, not refused.
    expect((await cp.api('/v1/usage', { method: 'POST', body: json({ proxyId: 'hp-nack', bootId: 'b', seq: 1, at: '2026-01-01T00:00:00Z', tenants: {} }), token: proxy })).status).toBe(200)
    const nack = await cp.api('/v1/proxies/hp-nack/ack', { method: 'POST', body: json({ version: 1, status: 'NACK', error: 'bad\u0000thing' }), token: proxy })
    expect(nack.status).toBe(204)
    const list = (await (await cp.api('/v1/proxies', { token: admin })).json()) as { items: { id: string; lastNack: { error: string } | null }[] }
    expect(list.items.find((p) => p.id === 'hp-nack')!.lastNack!.error).toBe('bad\ufffdthing')
    // A JSON document may hold NUL inside strings: it is stored as escaped JSON text.
    const doc = await cp.api('/v1/tenants/nul-name', { method: 'PUT', body: json({ tier: 'gold', displayName: 'a\u0000b' }), token: admin })
    expect(await oa.check(doc, 'PUT', '/v1/tenants/{id}')).toMatchObject({ config: { displayName: 'a\u0000b' } })
  })

  it('"__proto__" as an id is refused with 400 naming the path — never a 201 that stored nothing', async () => {
    const before = { version: cp.store.head()!.version, audit: await auditCount() }
    const cases: [string, unknown, string, string][] = [
      ['/v1/tenants/__proto__', { tier: 'gold' }, '/v1/tenants/{id}', 'tenants.__proto__'],
      ['/v1/upstreams/__proto__', { url: 'http://127.0.0.1:1' }, '/v1/upstreams/{id}', 'upstreams.__proto__'],
      ['/v1/quota-limits/__proto__', { graphql: { limitPerDay: 5 } }, '/v1/quota-limits/{id}', 'quotas.tenants.__proto__'],
      ['/v1/budgets/__proto__', { limit: 5 }, '/v1/budgets/{id}', 'quotas.tenants.__proto__.budget'],
      ['/v1/dlp-tenants/__proto__', { preset: 'mask_basic' }, '/v1/dlp-tenants/{id}', 'dlp.tenants.__proto__'],
      ['/v1/persisted-documents/__proto__', { document: 'query { a }' }, '/v1/persisted-documents/{id}', 'persistedDocuments.operations.__proto__'],
    ]
    for (const [path, body, template, docPath] of cases) {
      const r = await cp.api(path, { method: 'PUT', body: json(body), token: admin })
      expect(r.status, path).toBe(400)
      expect(await oa.check(r, 'PUT', template), path).toMatchObject({ problems: [`${docPath}: "__proto__" is not allowed as a key`] })
    }
    // The whole document with such a key (JSON.parse keeps it; the schema would drop it).
    const head = (await (await cp.api('/v1/config', { token: admin })).json()) as { document: Record<string, unknown> }
    const text = JSON.stringify(head.document).replace('"tenants":{', '"tenants":{"__proto__":{"tier":"gold"},')
    const whole = await cp.api('/v1/config', { method: 'PUT', body: text, token: admin })
    expect(await oa.check(whole, 'PUT', '/v1/config')).toMatchObject({ status: 400, problems: ['tenants.__proto__: "__proto__" is not allowed as a key'] })
    expect(cp.store.head()!.version).toBe(before.version)
    expect(await auditCount()).toBe(before.audit)
    expect(await oa.check(await cp.api('/v1/tenants/__proto__', { token: admin }), 'GET', '/v1/tenants/{id}')).toMatchObject({ status: 404 })
    expect(await oa.check(await cp.api('/v1/tenants/__proto__', { method: 'DELETE', token: admin }), 'DELETE', '/v1/tenants/{id}')).toMatchObject({ status: 404 })

    // Other Object.prototype names are ordinary keys: stored, versioned, audited and read back.
    for (const id of ['constructor', 'prototype', 'toString']) {
      const v0 = cp.store.head()!.version
      const created = await cp.api(`/v1/tenants/${id}`, { method: 'PUT', body: json({ tier: 'silver' }), token: admin })
      expect(created.status, id).toBe(201)
      expect(await oa.check(created, 'PUT', '/v1/tenants/{id}')).toMatchObject({ id, config: { tier: 'silver' }, version: v0 + 1 })
      expect(await oa.check(await cp.api(`/v1/tenants/${id}`, { token: admin }), 'GET', '/v1/tenants/{id}')).toMatchObject({ id, config: { tier: 'silver' } })
      const replaced = await cp.api(`/v1/tenants/${id}`, { method: 'PUT', body: json({ tier: 'gold' }), token: admin })
      expect(replaced.status, id).toBe(200)
      const audit = (await (await cp.api(`/v1/audit?resource=tenants/${id}`, { token: admin })).json()) as { items: { action: string }[] }
      expect(audit.items.map((e) => e.action)).toEqual(['tenants.put', 'tenants.put'])
      expect((await cp.api(`/v1/tenants/${id}`, { method: 'DELETE', token: admin })).status).toBe(200)
    }
  })

  it('rollback without a usable version is a 400, not a 404 for "version undefined"', async () => {
    for (const body of ['{}', '{"version":null}', '{"version":"x"}']) {
      const r = await cp.api('/v1/config/rollback', { method: 'POST', body, token: admin })
      expect(await oa.check(r, 'POST', '/v1/config/rollback'), body).toMatchObject({ status: 400, problems: [expect.stringMatching(/^version: expected an integer/)] })
    }
    const notObject = await cp.api('/v1/config/rollback', { method: 'POST', body: '[1]', token: admin })
    expect(await oa.check(notObject, 'POST', '/v1/config/rollback')).toMatchObject({ status: 400 })
  })

  it('HEAD answers like GET without a body wherever GET exists', async () => {
    for (const path of ['/healthz', '/readyz', '/openapi.json', '/v1/config', '/v1/tenants/acme']) {
      const get = await cp.api(path, { token: admin })
      const head = await cp.api(path, { method: 'HEAD', token: admin })
      expect(head.status, path).toBe(200)
      expect(head.headers.get('content-type'), path).toBe(get.headers.get('content-type'))
      expect(head.headers.get('content-length'), path).toBe(String((await get.arrayBuffer()).byteLength))
      expect(head.headers.get('etag'), path).toBe(get.headers.get('etag'))
      expect(await head.text(), path).toBe('')
    }
    const headStream = await cp.api('/v1/stream?proxy=hardening-head', { method: 'HEAD', token: proxy })
    expect(headStream.status).toBe(200)
    expect(headStream.headers.get('content-type')).toMatch(/^text\/event-stream/)
    expect(cp.hub.connected).toBe(0)
    const del = await cp.api('/healthz', { method: 'DELETE' })
    expect(del.status).toBe(405)
    expect(del.headers.get('allow')).toBe('GET, HEAD')
  })

  it('If-Match follows RFC 9110: * only bare, weak tags never match, malformed is a 400', async () => {
    const current = (await cp.api('/v1/tenants/acme', { token: admin })).headers.get('etag')!
    const put = (ifMatch: string) => cp.api('/v1/tenants/acme', { method: 'PUT', body: json({ tier: 'gold' }), token: admin, headers: { 'if-match': ifMatch } })
    for (const malformed of ['W/*', '"x", *', '', 'abc', '"unterminated']) {
      const r = await put(malformed)
      expect(await oa.check(r, 'PUT', '/v1/tenants/{id}'), JSON.stringify(malformed)).toMatchObject({ status: 400, problems: [expect.stringMatching(/^If-Match: expected \* or a list of entity tags/)] })
    }
    // If-Match compares strongly: a weak tag never matches, even with the current value.
    expect(await oa.check(await put(`W/${current}`), 'PUT', '/v1/tenants/{id}')).toMatchObject({ status: 412 })
    expect((await put('*')).status).toBe(200)
    expect((await put(`"nope", ${current}`)).status).toBe(200)
  })

  it('/readyz checks the database; /healthz stays liveness', async () => {
    const ready = await cp.api('/readyz', { token: '' })
    expect(await oa.check(ready, 'GET', '/readyz')).toEqual({ status: 'ready', database: engine.name, version: cp.store.head()!.version })
    expect(await oa.check(await cp.api('/healthz', { token: '' }), 'GET', '/healthz')).toMatchObject({ status: 'ok' })
  })

  // Last: it breaks the database under the running control plane.
  it('an unexpected error is a 500 with a request id, never the database’s own text; the log has it', async () => {
    if (engine.name === 'sqlite') {
      const side = new DatabaseSync(cp.dbSpec.slice('sqlite:'.length))
      side.exec('DROP TABLE alerts')
      side.close()
    } else {
      const side = new pg.Client({ connectionString: cp.dbSpec })
      await side.connect()
      await side.query('DROP TABLE alerts')
      await side.end()
    }
    const r = await cp.api('/v1/alerts', { token: admin, headers: { 'x-request-id': 'hardening-req-1' } })
    expect(r.status).toBe(500)
    expect(r.headers.get('x-request-id')).toBe('hardening-req-1')
    const text = await r.text()
    expect(text).not.toMatch(/alerts|relation|table|SQL/i)
    expect(JSON.parse(text)).toEqual({ type: 'about:blank', title: 'Internal Server Error', status: 500, detail: 'internal error (request id hardening-req-1; the control plane log has the details)', requestId: 'hardening-req-1' })
    const line = logs.lines.find((l) => l.requestId === 'hardening-req-1')
    expect(line).toMatchObject({ level: 50, msg: 'request failed', status: 500, err: { message: expect.stringMatching(/alerts/) } })
    // Without one the client sent, the id is made up and still ties the answer to the log line.
    const anon = await cp.api('/v1/alerts', { token: admin })
    const id = anon.headers.get('x-request-id')!
    expect(id).toMatch(/^[0-9a-f-]{36}$/)
    expect(await anon.json()).toMatchObject({ status: 500, requestId: id })
    expect(logs.lines.some((l) => l.requestId === id)).toBe(true)
  })
})
