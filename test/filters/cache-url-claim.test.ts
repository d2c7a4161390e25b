// A cache that varies on a URL-named claim ("https://example.com/uid", as Auth0 requires custom
// claims to be named): the cache split the name at its dots and never found it, so every user's
// key held `undefined` there and one user's private answer was served to the next. The tenant
// filter already read such claims whole; both now share proxy/claims.ts. Real proxy, a raw
// backend answering from the token it received, real HS256 tokens signed with jose.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const SECRET = 'an-hmac-secret-of-at-least-32-characters!'
const UID = 'https://example.com/uid'

/** Answers with the user the token names, as a backend that trusts the gateway's verification. */
function backendAnswer(req: IncomingMessage, res: ServerResponse): void {
  req.resume()
  req.on('end', () => {
    const payload = (req.headers.authorization ?? '').split('.')[1] ?? ''
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8') || '{}') as Record<string, unknown>
    const body = JSON.stringify({ data: { me: { uid: claims[UID] ?? null } } })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
}

describe('cache vary on a URL-named claim', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const key = new TextEncoder().encode(SECRET)
  const token = (uid: string) => new SignJWT({ tenant_id: 'acme', scope: 'read', [UID]: uid }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(key)
  const me = async (uid: string) => {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${await token(uid)}` }, body: '{"query":"{ me { uid } }"}' })
    return { cache: res.headers['x-cache'], text: await res.body.text() }
  }
  beforeAll(async () => {
    backend = await startRawBackend(backendAnswer)
    proxy = await startTestProxy({
      tenants: { acme: {} },
      routes: [
        {
          name: 'graphql',
          upstream: backend.url,
          filters: [{ name: 'tenant', jwt: { secret: SECRET, algorithms: ['HS256'] } }, { name: 'cache', vary: { claims: [UID] }, authorization: { scopes: ['read'] } }] as never,
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('each user gets their own answer, cached per user', async () => {
    const alice = await me('alice')
    const bob = await me('bob')
    expect(bob.text).toBe('{"data":{"me":{"uid":"bob"}}}')
    expect([alice.cache, bob.cache]).toEqual(['MISS', 'MISS'])
    const again = await me('alice')
    expect([again.cache, again.text]).toEqual(['HIT', '{"data":{"me":{"uid":"alice"}}}'])
  })
})
