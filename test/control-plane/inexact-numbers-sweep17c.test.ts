// A number JSON.parse does not keep as the client wrote it, in a free-form part of the document
// (a subscription topic's `variables`): 9007199254740993 was stored — and pushed to the proxies,
// which subscribe with it — as 9007199254740992, and 1e400 as null, with a 200. Now a 400 that names
// the path, like every other value the document cannot hold. Real control plane, SQLite and PostgreSQL;
// the bodies are sent as raw text, since JSON.stringify cannot write such numbers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { validateDocument, ValidationFailed } from '../../control-plane/store.ts'

let pg: TestPostgres
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
})

const topic = (variable: string) => `{"query":"subscription OnOrder($org: ID) { orderPlaced(org: $org) { id } }","variables":{"org":${variable}}}`

describe.each(['sqlite', 'postgres'] as const)('numbers the document cannot keep, on %s', (engine) => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane(engine === 'postgres' ? { db: await pg.createDatabase(`inexact_${Date.now()}`) } : {})
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  const headVersion = async () => ((await (await cp.api('/v1/config')).json()) as { version: number }).version

  it('an integer beyond 2^53 in a topic variable is a 400 naming the path, and nothing is committed', async () => {
    const v = await headVersion()
    const r = await cp.api('/v1/subscription-topics/orders', { method: 'PUT', body: topic('9007199254740993') })
    expect(r.status).toBe(400)
    const p = (await r.json()) as { problems: string[] }
    expect(p.problems).toEqual([expect.stringMatching(/^subscriptions\.topics\.orders\.variables\.org: an integer beyond ±9007199254740991 is not kept exactly/)])
    expect(await headVersion()).toBe(v)
    expect((await cp.api('/v1/subscription-topics/orders')).status).toBe(404)
  })

  it('1e400 (Infinity to JSON.parse, null once stored) is a 400 naming the path', async () => {
    const v = await headVersion()
    const r = await cp.api('/v1/subscription-topics/orders', { method: 'PUT', body: topic('1e400') })
    expect(r.status).toBe(400)
    expect(((await r.json()) as { problems: string[] }).problems).toEqual([expect.stringMatching(/^subscriptions\.topics\.orders\.variables\.org: a number beyond the range of a double/)])
    expect(await headVersion()).toBe(v)
  })

  it('the same values written as strings, and exact numbers, are stored as sent', async () => {
    const r = await cp.api('/v1/subscription-topics/orders', { method: 'PUT', body: topic('"9007199254740993"') })
    expect(r.status).toBe(201)
    const r2 = await cp.api('/v1/subscription-topics/by-fraction', { method: 'PUT', body: topic('12.5') })
    expect(r2.status).toBe(201)
    const got = (await (await cp.api('/v1/subscription-topics/orders')).json()) as { config: { variables: Record<string, unknown> } }
    expect(got.config.variables).toEqual({ org: '9007199254740993' })
    // The whole document round-trips through GET and PUT /v1/config unchanged.
    const head = await cp.api('/v1/config')
    const etag = head.headers.get('etag')!
    const doc = ((await head.json()) as { document: unknown }).document
    const put = await cp.api('/v1/config', { method: 'PUT', body: JSON.stringify(doc), headers: { 'if-match': etag } })
    expect(put.status).toBe(200)
    expect(((await put.json()) as { changed: boolean }).changed).toBe(false)
  })
})

describe('a version stored before the check', () => {
  it('keeps its inexact number through writes elsewhere (only a new or changed one is refused)', () => {
    const withTopic = (org: unknown) => ({
      ...seedDocument(),
      subscriptions: { topics: { orders: { query: 'subscription { orderPlaced { id } }', variables: { org } } } },
    })
    const stored = withTopic(9007199254740992 * 4)
    expect(() => validateDocument(withTopic(9007199254740992 * 4), stored)).not.toThrow()
    expect(() => validateDocument(withTopic(9007199254740992 * 8), stored)).toThrow(ValidationFailed)
    expect(() => validateDocument(withTopic(9007199254740992 * 4))).toThrow(ValidationFailed)
  })
})
