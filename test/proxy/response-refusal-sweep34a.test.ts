// One mechanism for a refusal made in the response phase (ResponseInfo.refuse): DLP's 403, a
// response filter's fail-closed 500 and the 504 for a response filter that missed its deadline
// were each built by hand (headers copied, the media type negotiated, the chain's headers put
// back) and drifted from the request-phase writer: DLP's 403 and the 500 named no filter in the
// access line (the request-phase refusal and a mid-export cut name theirs), and the 500 was not
// counted in igw_proxy_errors_total as the request-phase filter failure's 500 is. Now all of them
// agree with a request-phase refusal: status, a graphql-response+json client's media type, every
// Set-Cookie an earlier filter added, a batch answered per operation, the access line's code and
// filter. A real WorkerProxy with the real DLP filter and two test filters, a real backend, undici.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Decision, type Filter, type LocalReply, type RequestContext, type ResponseInfo } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, metricSum, startWorkerProxy } from '../helpers/proxy.ts'
import type { Registry } from 'prom-client'

const GRAPHQL_RESPONSE = 'application/graphql-response+json; charset=utf-8'
const COOKIES = ['sid=s1; Path=/; HttpOnly', 'csrf=c2; Path=/']
const BATCH = JSON.stringify([{ query: 'query Export { users { ssn } }' }, { query: 'query Export { users { ssn } }' }])
const scenarioOf = (ctx: RequestContext) => String(ctx.req.headers['x-scenario'] ?? '')
const never = () => new Promise<void>(() => {})

/** Slot 0: adds two cookies (every request); hangs in its response phase for "hang-local". */
const cookies: Filter = {
  name: 'tenant',
  onRequest(ctx): Decision {
    for (const c of COOKIES) ctx.addResponseHeader('set-cookie', c)
    return undefined
  },
  onResponse(ctx) {
    if (scenarioOf(ctx) === 'hang-local') return never()
  },
}

/** Slot 1: refuses in the request phase (the reference), fails or hangs in its response phase. */
const probe: Filter = {
  name: 'quota',
  onRequest(ctx): Decision {
    const s = scenarioOf(ctx)
    return s === 'request' || s === 'hang-local' ? errorReply('QUOTA_EXCEEDED', 'over quota', undefined, { 'retry-after': '7' }) : undefined
  },
  onResponse(ctx, res: ResponseInfo) {
    const s = scenarioOf(ctx)
    if (s === 'throw') throw new Error('response filter broke')
    if (s === 'hang') return never()
    if (s === 'malformed') res.refuse({ status: 403, headers: { 'x-why': 'a\r\nset-cookie: injected=1' }, body: 'no', code: 'UNKNOWN_TENANT' } as LocalReply)
  },
}

describe('a refusal in the response phase is answered as a request-phase one (sweep34a)', () => {
  let backend: RawBackend
  let proxy: WorkerProxy
  let registry: Registry
  let base: string
  const logs = new LogCapture()
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        // A batch's results; with an SSN in them for the DLP scenario (tokenize_strict blocks it).
        const one = req.headers['x-scenario'] === 'dlp' ? '{"data":{"users":[{"ssn":"123-45-6789"}]}}' : '{"data":{"users":[]}}'
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(`[${one},${one}]`)
      })
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-sweep34a-')), 'keyring.json')
    const config = validateConfig({
      log: { level: 'info' },
      dlp: { keyring: { file: keyring }, policy: { enabled: false } },
      routes: [
        {
          name: 'g',
          match: { pathPrefix: '/graphql' },
          upstream: backend.url,
          type: 'graphql',
          batching: { enabled: true },
          timeouts: { totalMs: 1500 },
          filters: [{ name: 'tenant' }, { name: 'quota' }, { name: 'dlp', preset: 'tokenize_strict', exports: { graphql: { operations: ['Export'] } } }],
        },
      ],
    } as never)
    const mods = { ...filterModules, tenant: { create: () => cookies }, quota: { create: () => probe } } as FilterModules
    const started = await startWorkerProxy(config, mods, { logs })
    proxy = started.proxy
    registry = started.registry
    base = `http://127.0.0.1:${started.port}`
  })
  afterAll(async () => {
    await proxy?.drain(100)
    await backend?.close()
  })

  async function send(scenario: string) {
    const path = `/graphql/${scenario}`
    const r = await request(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', 'x-scenario': scenario },
      body: BATCH,
      headersTimeout: 20_000,
    })
    const body = (await r.body.json()) as unknown
    let line: Record<string, unknown> | undefined
    for (let i = 0; i < 200 && line === undefined; i++) {
      line = logs.find('access').find((l) => l.path === path)
      if (line === undefined) await new Promise((res) => setTimeout(res, 10))
    }
    return { status: r.statusCode, type: r.headers['content-type'], cookies: r.headers['set-cookie'], retryAfter: r.headers['retry-after'], body, code: line?.code, filter: line?.filter }
  }
  const proxyErrors = async (code: string) => metricSum(await registry.metrics(), 'igw_proxy_errors_total', `code="${code}"`)

  it.each([
    // [scenario, status, code, filter that answered]
    ['request', 429, 'QUOTA_EXCEEDED', 'quota'], // the reference: a request-phase refusal
    ['dlp', 403, 'DLP_BLOCKED', 'dlp'], // DLP's refusal of the upstream's answer, before the head
    ['throw', 500, 'INTERNAL_SERVER_ERROR', 'quota'], // a response filter failing closed
    ['hang', 504, 'UPSTREAM_TIMEOUT', 'quota'], // a response filter missing the deadline (upstream answered)
    ['hang-local', 504, 'UPSTREAM_TIMEOUT', 'tenant'], // ... on a local reply's response phase
  ])('%s: %i in graphql-response+json, per operation, both cookies, access line code %s by %s', async (scenario, status, code, filter) => {
    const r = await send(scenario)
    expect(r.status).toBe(status)
    expect(r.type).toBe(GRAPHQL_RESPONSE)
    expect(r.cookies).toEqual(COOKIES)
    // A batch refused whole reads as one error result per operation in this media type.
    expect(Array.isArray(r.body)).toBe(true)
    const results = r.body as { errors: { extensions: { code: string } }[] }[]
    expect(results).toHaveLength(2)
    expect(results.map((x) => x.errors[0]!.extensions.code)).toEqual([code, code])
    expect(r.code).toBe(code)
    expect(r.filter).toBe(filter)
  })

  it("the response filter's 500 is counted as the proxy's own error, as the request-phase one is", async () => {
    const before = await proxyErrors('INTERNAL_SERVER_ERROR')
    expect((await send('throw')).status).toBe(500)
    expect(await proxyErrors('INTERNAL_SERVER_ERROR')).toBe(before + 1)
  })

  it("a refusal HTTP cannot carry is the filter's failure: 500 naming it, counted, nothing injected", async () => {
    const before = await proxyErrors('INTERNAL_SERVER_ERROR')
    const r = await send('malformed')
    expect(r.status).toBe(500)
    expect(r.cookies).toEqual(COOKIES)
    expect((r.body as { errors: { message: string }[] }[])[0]!.errors[0]!.message).toBe('filter "quota" failed')
    expect(r.code).toBe('INTERNAL_SERVER_ERROR')
    expect(r.filter).toBe('quota')
    expect(await proxyErrors('INTERNAL_SERVER_ERROR')).toBe(before + 1)
    expect(logs.find('filter answered with a reply HTTP cannot carry').length).toBeGreaterThan(0)
  })
})
