// Read-your-writes for a mutation answered as an incremental delivery (`@defer`, multipart/mixed)
// with Redis: a JSON mutation's last chunk waits for the purge, but the multipart answer's final
// part and closing delimiter went on at once. A client that read them and queried at once got the
// entity as it was: from the mutating proxy's L1 (its invalidation waits for the purge) and from
// the unpurged L2 copy on another proxy. Redis is made slow to purge with CLIENT PAUSE WRITE
// (reads still answered). The parts before the final one still go on as they come.
import type { ServerResponse } from 'node:http'
import { Redis } from 'ioredis'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'

const PREFIX = 'sweep29h:'
const HEAD = '\r\ncontent-type: application/json; charset=utf-8\r\n\r\n'
const user = (id: string, name: string) => ({ __typename: 'User', id, name })

/**
 * How the backend frames its parts: `trailing` ends each part with the delimiter in the same
 * write and closes with `--` alone (graphql-yoga); `leading` opens each part with its delimiter
 * and closes with the whole closing delimiter.
 */
type Framing = 'trailing' | 'leading'

describe('cache: a @defer mutation answer holds its final part for the Redis purge', () => {
  let redis: TestRedis
  let backend: RawBackend
  let a: TestProxy
  let b: TestProxy
  let admin: Redis
  const names = new Map<string, string>()
  /** Opens the deferred part of the mutation in flight (the backend waits for it). */
  let gate: (() => void) | undefined
  const written: string[] = []

  const write = (res: ServerResponse, text: string) => {
    written.push(text)
    res.write(text)
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
        res.writeHead(200, { 'content-type': 'multipart/mixed; boundary="-"; deferSpec=20220824' })
        const initial = JSON.stringify({ data: { updateUser: user(id, variables.name!) }, hasNext: true })
        const final = JSON.stringify({ incremental: [{ data: { friends: [] }, path: ['updateUser'] }], hasNext: false })
        if (variables.framing === 'trailing') {
          write(res, `\r\n---${HEAD}${initial}\r\n---`)
          gate = () => {
            write(res, `${HEAD}${final}\r\n---`)
            write(res, '--\r\n')
            res.end()
          }
        } else {
          write(res, `\r\n---${HEAD}${initial}`)
          write(res, `\r\n---${HEAD}${final}`)
          write(res, '\r\n-----\r\n')
          res.end()
        }
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

  it.each<Framing>(['trailing', 'leading'])('%s delimiters: the client that read the final part queries the entity as written, on both proxies', { timeout: 15_000 }, async (framing) => {
    // Both proxies' command and subscriber connections up (a heartbeat PING or a SUBSCRIBE sent).
    await waitUntil(async () => ((await admin.client('LIST')) as string).split('\n').filter((l) => / cmd=(ping|subscribe)/.test(l)).length >= 4, 10_000, 'proxies ready on Redis')
    const id = `u-${framing}`
    const stored = await l2Entries()
    expect(await query(a.url, id)).toEqual({ cache: 'MISS', name: 'old' })
    await waitUntil(async () => (await l2Entries()) > stored, 5_000, 'the L2 entry written')
    expect(await query(a.url, id)).toEqual({ cache: 'HIT', name: 'old' }) // in a's L1; b's is cold (L2 only)

    // Writes (the purge script) wait 0.7 s; reads of the old L2 copy are still answered.
    await admin.client('PAUSE', 700, 'WRITE')
    const name = `new ${framing} ${Date.now()}`
    const res = await request(`${a.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', accept: 'multipart/mixed;deferSpec=20220824,application/json' },
      body: JSON.stringify({ query: 'mutation M($id: ID!, $name: String!) { updateUser(id: $id, name: $name) { id name ... @defer { friends { id } } } }', variables: { id, name, framing } }),
    })
    expect(res.statusCode).toBe(200)
    let text = ''
    const reads: Promise<{ name: string }>[] = []
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString()
      // The initial part went on with its delimiter while the deferred one was not yet written.
      if (gate !== undefined && text.includes('"hasNext":true}\r\n---')) {
        gate()
        gate = undefined
      }
      // A client is done with the stream at its closing delimiter (the chunked body's own end
      // may come later): it queries at once, on both proxies.
      if (reads.length === 0 && text.endsWith('\r\n-----\r\n')) reads.push(query(a.url, id), query(b.url, id))
    }
    expect(text).toBe(written.join(''))
    // Redis had purged before the client had the final part.
    expect(await Promise.all(reads)).toMatchObject([{ name }, { name }])
  })
})
