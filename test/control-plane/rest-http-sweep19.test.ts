// The control plane's REST HTTP layer (sweep 19):
// 1. An answer given before a declared request body was read to its end — a 401 on /graphql, or a
//    GET / healthz / openapi answered without reading the body someone sent — said keep-alive, so
//    Node read the whole unread rest to discard it, however large its Content-Length (a client
//    could make the server read gigabytes after its answer). Now it says `Connection: close` and
//    the server stops reading; a pooled client's next request still gets its answer.
// 2. The "no config yet" 503 (before the first PUT /v1/config) was logged at error level as
//    "request failed", like a bug or an outage; it is a state the client is told about: warn.
// 3. GraphQL `setDlpPreset` audited a tenant's preset as `dlp/tenants/<t>/preset`, REST
//    `PUT /v1/dlp-tenants/<t>` the same change as `dlp-tenants/<t>`: `GET /v1/audit?resource=`
//    on one form missed the changes made through the other API. One form now (`dlp-tenants/<t>`),
//    on SQLite and PostgreSQL, and the chain still verifies.
import { connect, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { capturingLogger, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'

/** A body of `total` bytes, sent 64 KiB at a time (never held whole). */
function streamed(total: number): Readable {
  const chunk = Buffer.alloc(64 * 1024, 0x20)
  let sent = 0
  return new Readable({
    read() {
      if (sent >= total) return void this.push(null)
      const n = Math.min(chunk.length, total - sent)
      sent += n
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n))
    },
  })
}

/**
 * Sends `head` declaring a 1 GB body plus 64 KiB of it on a raw socket, and resolves with the
 * answer's head once the server ends the connection (it stopped reading the body), or with
 * `open: true` when it is still open `waitMs` after the answer (it went on reading).
 */
async function answerThenEnd(port: number, head: string, waitMs = 5_000): Promise<{ status: string; connection: string | undefined; open: boolean }> {
  const s: Socket = connect(port, '127.0.0.1')
  let text = ''
  let ended = false
  s.on('data', (d: Buffer) => (text += d.toString('latin1')))
  s.on('end', () => (ended = true))
  s.on('close', () => (ended = true))
  s.on('error', () => (ended = true))
  try {
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
    s.write(`${head}content-length: 1000000000\r\n\r\n`)
    s.write(Buffer.alloc(64 * 1024, 0x20))
    await expect.poll(() => text.includes('\r\n\r\n'), { timeout: 20_000, interval: 20 }).toBe(true)
    const deadline = Date.now() + waitMs
    while (!ended && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    return { status: text.split('\r\n')[0]!, connection: /\r\nconnection: ([^\r]*)/i.exec(text)?.[1]?.toLowerCase(), open: !ended }
  } finally {
    s.destroy()
  }
}

describe('answers given before the request body was read', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('a 401 on /graphql and GET answers with an unread body close the connection instead of reading it all', { timeout: 90_000 }, async () => {
    const admin = await cp.token({ sub: 'ops', roles: ['admin'] })
    const cases = [
      ['POST /graphql unauthenticated', 'POST /graphql HTTP/1.1\r\nhost: cp\r\ncontent-type: application/json\r\n', 'HTTP/1.1 401 Unauthorized'],
      ['GET /v1/tenants with a body', `GET /v1/tenants HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer ${admin}\r\n`, 'HTTP/1.1 200 OK'],
      ['GET /healthz with a body', 'GET /healthz HTTP/1.1\r\nhost: cp\r\n', 'HTTP/1.1 200 OK'],
      ['GET /openapi.json with a body', 'GET /openapi.json HTTP/1.1\r\nhost: cp\r\n', 'HTTP/1.1 200 OK'],
      // already so before: a REST refusal
      ['PUT /v1/tenants/x unauthenticated', 'PUT /v1/tenants/x HTTP/1.1\r\nhost: cp\r\ncontent-type: application/json\r\n', 'HTTP/1.1 401 Unauthorized'],
    ] as const
    for (const [name, head, status] of cases) {
      const r = await answerThenEnd(cp.port, head)
      expect(r.status, name).toBe(status)
      expect(r.connection, name).toBe('close')
      expect(r.open, `${name}: the server kept reading the 1 GB body after its answer`).toBe(false)
    }
  })

  it('a pooled client (one connection) gets its next answers after such a close; bodyless requests keep the connection', { timeout: 90_000 }, async () => {
    const admin = await cp.token({ sub: 'ops', roles: ['admin'] })
    const pool = new Pool(cp.url, { connections: 1, headersTimeout: 20_000, bodyTimeout: 20_000 })
    try {
      const refused = await pool.request({ path: '/graphql', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(3 << 20) }, body: streamed(3 << 20) })
      await refused.body.dump()
      expect(refused.statusCode).toBe(401)
      expect(refused.headers.connection).toBe('close')
      const gotBody = await pool.request({ path: '/v1/tenants', method: 'GET', headers: { authorization: `Bearer ${admin}`, 'content-length': String(3 << 20) }, body: streamed(3 << 20) })
      await gotBody.body.dump()
      expect(gotBody.statusCode).toBe(200)
      expect(gotBody.headers.connection).toBe('close')
      for (const path of ['/v1/tenants', '/healthz', '/openapi.json']) {
        const r = await pool.request({ path, method: 'GET', headers: { authorization: `Bearer ${admin}` } })
        await r.body.dump()
        expect(r.statusCode, path).toBe(200)
        // No body: answered synchronously or not, the connection is kept.
        expect(r.headers.connection, path).not.toBe('close')
      }
      const gql = await pool.request({ path: '/graphql', method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ __typename }' }) })
      expect(gql.statusCode).toBe(200)
      expect(await gql.body.json()).toEqual({ data: { __typename: 'Query' } })
    } finally {
      await pool.close()
    }
  })
})

describe('the "no config yet" 503', () => {
  it('is logged as a warning with its reason, not as an error "request failed"', { timeout: 60_000 }, async () => {
    const { logger, lines } = capturingLogger()
    const cp = await startTestControlPlane({ seed: null, logger })
    try {
      const r = await cp.api('/v1/config', { headers: { 'x-request-id': 'no-config-19' } })
      expect(r.status).toBe(503)
      expect(((await r.json()) as { detail: string }).detail).toMatch(/no config yet/)
      await expect.poll(() => lines.some((l) => l.requestId === 'no-config-19'), { timeout: 10_000 }).toBe(true)
      const mine = lines.filter((l) => l.requestId === 'no-config-19')
      expect(mine.filter((l) => (l.level as number) >= 50)).toEqual([])
      expect(mine.some((l) => l.level === 40 && l.status === 503 && /no config yet/.test(String(l.reason)))).toBe(true)
    } finally {
      await cp.close()
    }
  })
})

interface AuditItem {
  action: string
  resource: string
  before: unknown
  after: unknown
}

for (const engine of ['sqlite', 'postgres'] as const) {
  describe(`a tenant's DLP preset in the audit log (${engine})`, () => {
    let pg: TestPostgres | undefined
    let cp: TestControlPlane
    beforeAll(async () => {
      if (engine === 'postgres') pg = await startPostgres()
      cp = await startTestControlPlane(pg ? { db: await pg.createDatabase('audit_dlp_19') } : {})
    }, 120_000)
    afterAll(async () => {
      await cp?.close()
      await pg?.close()
    })

    it('REST PUT /v1/dlp-tenants/acme and GraphQL setDlpPreset(tenant: "acme") are found under one resource', { timeout: 60_000 }, async () => {
      const put = await cp.api('/v1/dlp-tenants/acme', { method: 'PUT', body: JSON.stringify({ preset: 'mask_basic' }) })
      expect(put.status).toBe(201)
      const gql = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: 'mutation { setDlpPreset(preset: "tokenize_strict", tenant: "acme") }' }) })
      expect(((await gql.json()) as { errors?: unknown }).errors).toBeUndefined()
      const list = (await (await cp.api('/v1/audit?resource=dlp-tenants/acme')).json()) as { items: AuditItem[] }
      expect(list.items.map((e) => e.action)).toEqual(['dlp-tenants.put', 'dlp.preset.set'])
      // The same shape of value on both: the tenant's entry.
      expect(list.items.map((e) => [e.before ?? null, e.after])).toEqual([
        [null, { preset: 'mask_basic' }],
        [{ preset: 'mask_basic' }, { preset: 'tokenize_strict' }],
      ])
      const verify = (await (await cp.api('/v1/audit/verify')).json()) as { ok: boolean }
      expect(verify.ok).toBe(true)
    })
  })
}

describe('malformed requests are the client’s error, not the server’s', () => {
  let cp: TestControlPlane
  let lines: Record<string, unknown>[]
  beforeAll(async () => {
    const captured = capturingLogger()
    lines = captured.lines
    cp = await startTestControlPlane({ logger: captured.logger })
  })
  afterAll(async () => {
    await cp?.close()
  })

  /** One request on a raw socket; the answer's head and body. */
  async function rawRequest(text: string): Promise<{ status: string; body: string }> {
    const s = connect(cp.port, '127.0.0.1')
    let got = ''
    s.on('data', (d: Buffer) => (got += d.toString('utf8')))
    try {
      await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
      s.write(text)
      await expect.poll(() => /\r\n\r\n/.test(got) && got.length > got.indexOf('\r\n\r\n') + 4, { timeout: 20_000, interval: 20 }).toBe(true)
      await new Promise((r) => setTimeout(r, 50))
      return { status: got.split('\r\n')[0]!, body: got.slice(got.indexOf('\r\n\r\n') + 4) }
    } finally {
      s.destroy()
    }
  }

  it('an absolute-form request target WHATWG URL refuses (bad port, bad host) is a 400 problem, not a 500 logged as an error', { timeout: 60_000 }, async () => {
    for (const target of ['http://x:99999/healthz', 'http://[/v1/config', 'http://%/v1/tenants']) {
      const r = await rawRequest(`GET ${target} HTTP/1.1\r\nhost: cp\r\nx-request-id: bad-target-19\r\nconnection: close\r\n\r\n`)
      expect(r.status, target).toBe('HTTP/1.1 400 Bad Request')
      const problem = JSON.parse(r.body) as { status: number; detail: string }
      expect(problem.status).toBe(400)
      expect(problem.detail).toBe('invalid request target')
    }
    expect(lines.filter((l) => l.requestId === 'bad-target-19' && (l.level as number) >= 50)).toEqual([])
  })

  it('a client that goes away in the middle of its body is not logged as a failed request', { timeout: 60_000 }, async () => {
    const admin = await cp.token({ sub: 'ops', roles: ['admin'] })
    const s = connect(cp.port, '127.0.0.1')
    await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject))
    let got = ''
    s.on('data', (d: Buffer) => (got += d.toString('latin1')))
    s.write(`PUT /v1/tenants/gone HTTP/1.1\r\nhost: cp\r\nx-request-id: went-away-19\r\nauthorization: Bearer ${admin}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\nexpect: 100-continue\r\n\r\n`)
    // Node answers 100 Continue as it hands the request to the handler: the request is being served.
    await expect.poll(() => got.startsWith('HTTP/1.1 100 Continue'), { timeout: 20_000, interval: 20 }).toBe(true)
    s.write('{"tier":')
    await new Promise((r) => setTimeout(r, 200))
    s.destroy()
    await expect.poll(async () => (await (await fetch(`${cp.metricsUrl}/metrics`)).text()).includes('route="/v1/tenants/{id}",method="PUT",status="aborted"'), { timeout: 20_000 }).toBe(true)
    await expect.poll(() => lines.some((l) => l.requestId === 'went-away-19'), { timeout: 10_000 }).toBe(true)
    expect(lines.filter((l) => l.requestId === 'went-away-19' && (l.level as number) >= 50)).toEqual([])
    expect((await cp.api('/v1/tenants/gone')).status).toBe(404)
  })

  it('POST /openapi.json is a 405 with Allow: GET, HEAD (the document exists), not a 404', async () => {
    const r = await fetch(`${cp.url}/openapi.json`, { method: 'POST' })
    expect(r.status).toBe(405)
    expect(r.headers.get('allow')).toBe('GET, HEAD')
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    const head = await fetch(`${cp.url}/openapi.json`, { method: 'HEAD' })
    expect(head.status).toBe(200)
  })
})
