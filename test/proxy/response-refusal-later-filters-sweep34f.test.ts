// Sweep 34f: a refusal made in the response phase (ResponseInfo.refuse, a filter failing closed)
// is igw's own reply, and the filters still to run see it as such (ResponseInfo.refused). It kept
// `local: false` (the upstream did answer) and read as the upstream's content: the cache's
// stale-if-error replaced a fail-closed 500 with a stale copy (serving what the failing filter
// withheld), and DLP inspected the error JSON as an export (audited, an `x-dlp` summary added).
// A real WorkerProxy with the real cache and DLP filters and a test filter, a real backend, undici.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import { errorReply, type Filter, type RequestContext, type ResponseInfo } from '../../proxy/filter.ts'
import type { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { LogCapture, startWorkerProxy } from '../helpers/proxy.ts'

const scenarioOf = (ctx: RequestContext) => String(ctx.req.headers['x-scenario'] ?? '')

/** Last in the chain, so first in the response phase: fails closed or refuses on demand. */
const probe: Filter = {
  name: 'quota',
  onResponse(ctx, res: ResponseInfo) {
    const s = scenarioOf(ctx)
    if (s === 'throw') throw new Error('response filter broke')
    if (s === 'refuse') res.refuse(errorReply('UNKNOWN_TENANT', 'not for you'))
  },
}

/** What a filter earlier in the chain (later in the response phase) saw. */
const seen: { refused: boolean; local: boolean; status: number }[] = []
const witness: Filter = {
  name: 'tenant',
  onResponse(_ctx, res: ResponseInfo) {
    seen.push({ refused: res.refused, local: res.local, status: res.status })
  },
}

describe('filters after a response-phase refusal see igw\'s reply, and leave it alone (sweep34f)', () => {
  let backend: RawBackend
  let proxy: WorkerProxy
  let base: string
  let n = 0
  const logs = new LogCapture()
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(req.url?.startsWith('/export') ? '{"data":{"users":[{"name":"Ada"}]}}' : `{"data":{"n":${++n}}}`)
      })
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-sweep34f-')), 'keyring.json')
    const config = validateConfig({
      log: { level: 'info' },
      dlp: { keyring: { file: keyring }, policy: { enabled: false } },
      routes: [
        { name: 'cached', match: { pathPrefix: '/cached' }, upstream: backend.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'cache', requireTenant: false, ttlSeconds: 1, staleIfErrorSeconds: 600 }, { name: 'quota' }] },
        { name: 'export', match: { pathPrefix: '/export' }, upstream: backend.url, type: 'graphql', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { graphql: { operations: ['Export'] } } }, { name: 'quota' }] },
      ],
    } as never)
    const mods = { ...filterModules, tenant: { create: () => witness }, quota: { create: () => probe } } as FilterModules
    const started = await startWorkerProxy(config, mods, { logs })
    proxy = started.proxy
    base = `http://127.0.0.1:${started.port}`
  })
  afterAll(async () => {
    await proxy?.drain(100)
    await backend?.close()
  })

  async function send(path: string, query: string, scenario = '') {
    const r = await request(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-scenario': scenario }, body: JSON.stringify({ query }) })
    return { status: r.statusCode, cache: r.headers['x-cache'], dlp: r.headers['x-dlp'], trailer: r.headers.trailer, body: (await r.body.json()) as { data?: unknown; errors?: { extensions?: { code?: string } }[] } }
  }

  it('the cache\'s stale-if-error does not replace a fail-closed 500 (or a refusal) with a stale copy', async () => {
    const first = await send('/cached', '{ n }')
    expect(first).toMatchObject({ status: 200, cache: 'MISS' })
    await new Promise((r) => setTimeout(r, 1200)) // past its freshness, inside stale-if-error
    seen.length = 0
    const failed = await send('/cached', '{ n }', 'throw')
    // (before: a 200 with x-cache STALE, the content the failing filter withheld)
    expect({ status: failed.status, code: failed.body.errors?.[0]?.extensions?.code, cache: failed.cache }).toEqual({ status: 500, code: 'INTERNAL_SERVER_ERROR', cache: 'MISS' })
    const refused = await send('/cached', '{ n }', 'refuse')
    expect({ status: refused.status, code: refused.body.errors?.[0]?.extensions?.code }).toEqual({ status: refused.status, code: 'UNKNOWN_TENANT' })
    expect(seen).toEqual([
      { refused: true, local: false, status: 500 },
      { refused: true, local: false, status: 403 },
    ])
    // The entry is not spoiled by them: an upstream answer is stored and served again.
    expect((await send('/cached', '{ n }')).status).toBe(200)
  })

  it('a mutation whose response was refused did run: the route\'s cached entries go (its result, naming what it touched, is gone)', async () => {
    await send('/cached', '{ m: n }')
    expect((await send('/cached', '{ m: n }')).cache).toBe('HIT')
    const refused = await send('/cached', 'mutation { touch { id } }', 'refuse')
    expect(refused.status).toBeGreaterThanOrEqual(400)
    // (before: read as a refusal before the upstream, only the mutation's own tags went)
    expect((await send('/cached', '{ m: n }')).cache).toBe('MISS')
  })

  it('DLP does not inspect igw\'s fail-closed 500 as an export (no x-dlp, no audit)', async () => {
    const before = logs.find('dlp export').length
    const r = await send('/export', 'query Export { users { ssn } }', 'throw')
    expect({ status: r.status, code: r.body.errors?.[0]?.extensions?.code, dlp: r.dlp, trailer: r.trailer }).toEqual({ status: 500, code: 'INTERNAL_SERVER_ERROR', dlp: undefined, trailer: undefined })
    expect(logs.find('dlp export').length).toBe(before)
    // (the reference: the export itself is inspected and summarized)
    const ok = await send('/export', 'query Export { users { ssn } }')
    expect(ok.status).toBe(200)
    expect(ok.dlp ?? ok.trailer).toBeDefined()
  })
})
