// Access-log text and the worker's log batcher (sweep 24x): a client's operation name with a lone
// surrogate (sent as "\ud83d", or an emoji the 128-character clip cut in two) must not reach the
// line as an unpaired \ud83d escape, which strict JSON readers (serde_json, so Vector) refuse; and
// pino's logger.flush(cb) must call back through the batching destination.
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BatchingDestination, clipLogField, createLogger } from '../../proxy/log.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const EMOJI = '\u{1F600}' // two UTF-16 units
const LONE = '\ud83d'

describe('clipLogField', () => {
  it('keeps a surrogate pair whole at the cut and replaces lone surrogates', () => {
    const cut = clipLogField(`${'a'.repeat(127)}${EMOJI}tail`)!
    expect(cut.isWellFormed()).toBe(true)
    expect(cut).toBe(`${'a'.repeat(127)}…`)
    expect(clipLogField(`x${LONE}y`)).toBe('x\ufffdy')
    expect(clipLogField(`${'b'.repeat(200)}${LONE}`)).toBe(`${'b'.repeat(128)}…`)
    expect(clipLogField(`${EMOJI}ok`)).toBe(`${EMOJI}ok`)
    expect(clipLogField(undefined)).toBeUndefined()
  })
})

describe('access line of a client-chosen operation name', () => {
  let backend: RawBackend
  let proxy: TestProxy
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('is well-formed text, whatever surrogates the name held', async () => {
    const names = [`${'a'.repeat(127)}${EMOJI}z`, `${'n'.repeat(110)}${LONE}`]
    for (const operationName of names) {
      // JSON.stringify writes the lone surrogate as the escape "\ud83d", as a client would send it.
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ a }', operationName }) })
      await res.body.dump()
      expect(res.statusCode).toBe(200)
    }
    await expect.poll(() => proxy.logs.find('access').length, { timeout: 5_000 }).toBe(2)
    const raw = proxy.logs.raw.filter((l) => l.includes('"msg":"access"'))
    for (const line of raw) expect(line).not.toMatch(/\\ud[89a-f][0-9a-f]{2}/i)
    const ops = proxy.logs.find('access').map((l) => l.op as string)
    for (const op of ops) expect(op.isWellFormed()).toBe(true)
    expect(ops).toEqual([`${'a'.repeat(127)}…`, `${'n'.repeat(110)}\ufffd`])
  })

  it('a request no route takes logs its Host clipped (a client chose it, up to the header limit)', async () => {
    // ingress mode with no catch-all: a Host matching no route is a 404 logged as `access (no route)`.
    const ingress = await startTestProxy({ mode: 'ingress', routes: [{ name: 'only', match: { host: 'api.example.com' }, upstream: backend.url }] })
    try {
      const host = `${'h'.repeat(4000)}.example.com`
      const res = await request(`${ingress.url}/x`, { headers: { host } })
      await res.body.dump()
      expect(res.statusCode).toBe(404)
      await expect.poll(() => ingress.logs.find('access (no route)').length, { timeout: 5_000 }).toBe(1)
      const logged = ingress.logs.find('access (no route)')[0]!.host as string
      expect(logged).toBe(`${'h'.repeat(128)}…`)
    } finally {
      await ingress.close()
    }
  })
})

describe('BatchingDestination under pino', () => {
  it('calls back logger.flush(cb) once the batch is handed to the sink', async () => {
    const chunks: string[] = []
    const logger = createLogger('info', new BatchingDestination((c) => chunks.push(c)))
    logger.info({ k: 1 }, 'before flush')
    let flushed = false
    let seenAtCallback = 0
    logger.flush(() => {
      seenAtCallback = chunks.length
      flushed = true
    })
    await expect.poll(() => flushed, { timeout: 1_000 }).toBe(true)
    expect(seenAtCallback).toBe(1)
    expect(chunks.join('')).toContain('"msg":"before flush"')
    // An empty batch still answers.
    await new Promise<void>((resolve) => logger.flush(() => resolve()))
  })
})
