// Read-your-writes for a mutation answered as a stream, with Redis: a JSON mutation's last chunk
// waits for the purge, but
// - an incremental delivery (`@defer`, multipart/mixed) sent its final part and closing delimiter
//   at once;
// - a GraphQL-over-SSE answer (text/event-stream, graphql-sse "distinct connections": `next`
//   events, then `complete`) was read as JSON (the route's whole cache went on every such
//   mutation) and went on unheld.
// A client that read the end of the answer and queried at once got the entity as it was: from the
// mutating proxy's L1 (its invalidation waits for the purge) and from the unpurged L2 copy on
// another proxy. Redis is made slow to purge with CLIENT PAUSE WRITE (reads still answered). What
// comes before the end (a part or a result with `hasNext: true`) still goes on as it comes.
import type { ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

const PREFIX = 'streamedhold:'
const HEAD = '\r\ncontent-type: application/json; charset=utf-8\r\n\r\n'
const user = (id: string, name: string) => ({ __typename: 'User', id, name })

/**
 * How the backend answers the mutation:
 * - `trailing`: multipart, each part ended by the delimiter in the same write, closed by `--`
 *   alone (graphql-yoga); `leading`: each part opened by its delimiter, closed by the whole
 *   closing delimiter;
 * - `sse-incremental`: CRLF lines, a comment, a `hasNext: true` result, the last result,
 *   `complete`; `sse-single`: LF lines, one result, `complete` in a later write.
 * Where the backend writes in two goes, it waits for the client to have the first (`gate`): a
 * proxy holding it would hang the test.
 */
type Framing = 'trailing' | 'leading' | 'sse-incremental' | 'sse-single'
const cases: { framing: Framing; accept: string; gateAt?: string; done: (text: string) => boolean }[] = [
  { framing: 'trailing', accept: 'multipart/mixed;deferSpec=20220824,application/json', gateAt: '"hasNext":true}\r\n---', done: (t) => t.endsWith('\r\n-----\r\n') },
  { framing: 'leading', accept: 'multipart/mixed;deferSpec=20220824,application/json', done: (t) => t.endsWith('\r\n-----\r\n') },
  { framing: 'sse-incremental', accept: 'text/event-stream', gateAt: '"hasNext":true}\r\n\r\n', done: (t) => t.includes('event: complete\r\ndata:\r\n\r\n') },
  // The only result is the answer for a client (graphql-sse's iterate() takes it without waiting for `complete`).
  { framing: 'sse-single', accept: 'text/event-stream', done: (t) => t.includes('}}}\n\n') },
]

describe('cache: a streamed mutation answer holds its end for the Redis purge', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let admin: Redis
  const names = new Map<string, string>()
  /** Lets the rest of the mutation in flight be written (the backend waits for it). */
  let gate: (() => void) | undefined
  const written: string[] = []

  const write = (res: ServerResponse, text: string) => {
    written.push(text)
    res.write(text)
  }
  const end = (res: ServerResponse, ...texts: string[]) => {
    for (const t of texts) write(res, t)
    res.end()
  }

  /** The mutation's answer in `framing` (see Framing). */
  function answer(res: ServerResponse, framing: Framing, result: object): void {
    const deferred = { incremental: [{ data: { friends: [] }, path: ['updateUser'] }], hasNext: false }
    if (framing === 'trailing' || framing === 'leading') {
      res.writeHead(200, { 'content-type': 'multipart/mixed; boundary="-"; deferSpec=20220824' })
      const initial = JSON.stringify({ ...result, hasNext: true })
      if (framing === 'trailing') {
        write(res, `\r\n---${HEAD}${initial}\r\n---`)
        gate = () => end(res, `${HEAD}${JSON.stringify(deferred)}\r\n---`, '--\r\n')
      } else end(res, `\r\n---${HEAD}${initial}`, `\r\n---${HEAD}${JSON.stringify(deferred)}`, '\r\n-----\r\n')
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' })
    if (framing === 'sse-incremental') {
      write(res, `: ping\r\n\r\nevent: next\r\ndata: ${JSON.stringify({ ...result, hasNext: true })}\r\n\r\n`)
      gate = () => end(res, `event: next\r\ndata: ${JSON.stringify(deferred)}\r\n\r\n`, 'event: complete\r\ndata:\r\n\r\n')
    } else {
      write(res, `event: next\ndata: ${JSON.stringify(result)}\n\n`)
      setImmediate(() => end(res, 'event: complete\ndata:\n\n'))
    }
  }

  beforeAll(async () => {
    redis = await startRedis()
    backend = await startRawBackend((req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => (body += c.toString()))
      req.on('end', () => {
        const { query, variables } = JSON.parse(body) as { query: string; variables: { id: string; name?: string; framing?: Framing } }
        const id = variables.id
        if (!query.startsWith('mutation')) {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { user: user(id, names.get(id) ?? 'old') } }))
          return
        }
        names.set(id, variables.name!)
        written.length = 0
        answer(res, variables.framing!, { data: { updateUser: user(id, variables.name!) } })
      })
    })
    const doc = () => ({
      redis: { url: redis.url, keyPrefix: PREFIX },
      tenants: { acme: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'cache', ttlSeconds: 60, redis: { l2: true, timeoutMs: 2_000 }, invalidation: { redisTimeoutMs: 5_000 } }] as never }],
    })
    // Two proxies (as two pods) of one config.
    ;[a, b] = await Promise.all([startTestProxy(doc()), startTestProxy(doc())])
    admin = new Redis(redis.url)
  })
  afterAll(async () => {
    await admin?.client('UNPAUSE').catch(() => {})
    admin?.disconnect()
    await a?.close()
    await b?.close()
    await backend?.close()
    await redis?.close()
  })

  const query = async (url: string, id: string) => {
    const res = await request(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: 'query Q($id: ID!) { user(id: $id) { id name } }', variables: { id } }) })
    const json = (await res.body.json()) as { data: { user: { name: string } } }
    return { cache: res.headers['x-cache'], name: json.data.user.name }
  }
  const l2Entries = async () => (await admin.keys(`${PREFIX}cache:e:*`)).length
  /** Cached in a's L1 and in L2 (b's L1 stays cold: L2 only). */
  const cache = async (id: string) => {
    const stored = await l2Entries()
    expect(await query(a.url, id)).toEqual({ cache: 'MISS', name: 'old' })
    await waitUntil(async () => (await l2Entries()) > stored, 5_000, 'the L2 entry written')
    expect(await query(a.url, id)).toEqual({ cache: 'HIT', name: 'old' })
  }

  it.each(cases)('$framing: the client that read the end of the answer queries the entity as written, on both proxies', { timeout: 15_000 }, async ({ framing, accept, gateAt, done }) => {
    // Both proxies' command and subscriber connections up (a heartbeat PING or a SUBSCRIBE sent).
    await waitUntil(async () => ((await admin.client('LIST')) as string).split('\n').filter((l) => / cmd=(ping|subscribe)/.test(l)).length >= 4, 10_000, 'proxies ready on Redis')
    const id = `u-${framing}`
    const other = `other-${framing}`
    await cache(id)
    await cache(other)

    // Writes (the purge script) wait 0.7 s; reads of the old L2 copy are still answered.
    await admin.client('PAUSE', 700, 'WRITE')
    const name = `new ${framing} ${Date.now()}`
    const res = await request(`${a.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', accept },
      body: JSON.stringify({ query: 'mutation M($id: ID!, $name: String!) { updateUser(id: $id, name: $name) { id name ... @defer { friends { id } } } }', variables: { id, name, framing } }),
    })
    expect(res.statusCode).toBe(200)
    let text = ''
    const reads: Promise<{ name: string }>[] = []
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString()
      // What came before the end went on while the rest was not yet written.
      if (gate !== undefined && gateAt !== undefined && text.includes(gateAt)) {
        gate()
        gate = undefined
      }
      // Done with the answer (the chunked body's own end may come later): the client queries at once, on both proxies.
      if (reads.length === 0 && done(text)) reads.push(query(a.url, id), query(b.url, id))
    }
    expect(text).toBe(written.join(''))
    // Redis had purged before the client had the end of the answer.
    expect(await Promise.all(reads)).toMatchObject([{ name }, { name }])
    // Only the entity the mutation returned went: another one of the route is still in a's L1.
    expect(await query(a.url, other)).toEqual({ cache: 'HIT', name: 'old' })
  })
})
