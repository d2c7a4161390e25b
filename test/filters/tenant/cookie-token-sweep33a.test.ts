// Tenant sweep 33a: `jwt.cookie`, a token from a cookie. Browsers cannot set an Authorization
// header on a WebSocket upgrade or an EventSource, so a cookie-authenticated web app could not use
// JWT tenants for subscriptions. As Envoy's jwt_authn (from_headers, then from_cookies) the header
// comes first; the named cookie only when it holds no token. The Cookie header reaches the backend
// as sent. Old code: the schema refuses `jwt.cookie` (unrecognized key), so every test below fails.
// Real proxy (supervisor + worker), real graphql-yoga backend (HTTP, SSE, graphql-ws), jose
// tokens, undici, graphql-ws client over `ws`.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSchema, createYoga } from 'graphql-yoga'
import { createClient } from 'graphql-ws'
import { useServer, type Extra } from 'graphql-ws/use/ws'
import type { Context, SubscribePayload } from 'graphql-ws'
import { SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { redactConfig } from '../../../config/redact.ts'
import WebSocket, { WebSocketServer } from 'ws'
import { validateConfig } from '../../../config/load.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const SECRET = 'sweep33a-shared-secret-of-at-least-32-chars'
const sign = (tenant: string, key = SECRET) =>
  new SignJWT({ tenant_id: tenant }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('5m').sign(new TextEncoder().encode(key))
const JWT = { secret: SECRET, algorithms: ['HS256'], cookie: 'igw_session' }

interface Who {
  tenant: string | null
  cookie: string | null
}

/** graphql-yoga over HTTP (POST, GET + SSE) and graphql-ws on /graphql; `whoami` says what the backend got. */
async function whoamiBackend(): Promise<{ url: string; seen: IncomingHttpHeaders[]; close: () => Promise<void> }> {
  const seen: IncomingHttpHeaders[] = []
  const who = (ctx: { req?: { headers: IncomingHttpHeaders }; request: Request }): Who => {
    const get = (name: string) => (ctx.req !== undefined ? ((ctx.req.headers[name] as string | undefined) ?? null) : ctx.request.headers.get(name))
    return { tenant: get('x-tenant-id'), cookie: get('cookie') }
  }
  const schema = createSchema({
    typeDefs: /* GraphQL */ `
      type Who { tenant: String, cookie: String }
      type Query { whoami: Who! }
      type Subscription { whoami: Who! }
    `,
    resolvers: {
      Query: { whoami: (_: unknown, _a: unknown, ctx: Parameters<typeof who>[0]) => who(ctx) },
      Subscription: {
        whoami: {
          subscribe: async function* (_: unknown, _a: unknown, ctx: Parameters<typeof who>[0]) {
            yield { whoami: who(ctx) }
          },
        },
      },
    },
  })
  const yoga = createYoga({ schema, graphqlEndpoint: '/graphql', logging: false, maskedErrors: false, landingPage: false, graphiql: false })
  const server: Server = createServer((req, res) => {
    seen.push(req.headers)
    void yoga.handle(req, res)
  })
  const wss = new WebSocketServer({ server, path: '/graphql' })
  wss.on('connection', (_ws, req) => seen.push(req.headers))
  useServer(
    {
      execute: (args: { rootValue: { execute: (a: unknown) => unknown } }) => args.rootValue.execute(args),
      subscribe: (args: { rootValue: { subscribe: (a: unknown) => unknown } }) => args.rootValue.subscribe(args),
      onSubscribe: async (ctx: Context<Record<string, unknown> | undefined, Extra>, _id: string, params: SubscribePayload) => {
        const enveloped = yoga.getEnveloped({ ...ctx, req: ctx.extra.request, socket: ctx.extra.socket, params })
        const document = enveloped.parse(params.query)
        const errors = enveloped.validate(enveloped.schema, document)
        if (errors.length) return errors
        return { schema: enveloped.schema, operationName: params.operationName, document, variableValues: params.variables, contextValue: await enveloped.contextFactory(), rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe } }
      },
    } as never,
    wss,
  )
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: async () => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/** One graphql-ws subscription of `whoami` through `url` with these upgrade headers: its values, or how it failed. */
async function subscribeWhoami(url: string, headers: Record<string, string>, connectionParams?: Record<string, unknown>): Promise<{ values: Who[]; error?: unknown }> {
  // A browser sends its cookies on the upgrade request itself: ws takes them as handshake headers.
  class CookieSocket extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols, { headers })
    }
  }
  const client = createClient({ url, webSocketImpl: CookieSocket, connectionParams, retryAttempts: 0, lazy: true })
  const values: Who[] = []
  try {
    await new Promise<void>((resolve, reject) =>
      client.subscribe({ query: 'subscription { whoami { tenant cookie } }' }, { next: (v) => void values.push((v.data as { whoami: Who }).whoami), error: reject, complete: resolve }),
    )
    return { values }
  } catch (error) {
    return { values, error }
  } finally {
    await client.dispose()
  }
}

describe('tenant sweep 33a: the token from a cookie (jwt.cookie)', () => {
  let be: Awaited<ReturnType<typeof whoamiBackend>>
  let p: TestProxy // websocket passthrough: the chain runs once, on the upgrade
  let hub: TestProxy // websocket terminate: the chain runs per subscribe, with the upgrade's headers

  beforeAll(async () => {
    be = await whoamiBackend()
    const tenants = { acme: {}, globex: {} }
    p = await startTestProxy({ log: { level: 'debug' }, tenants, routes: [{ name: 'c33a', match: { pathPrefix: '/' }, upstream: be.url, filters: [{ name: 'tenant', jwt: JWT }] }] } as never)
    hub = await startTestProxy({ tenants, routes: [{ name: 'h33a', match: { pathPrefix: '/' }, upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant', jwt: JWT }] }] } as never)
  }, 60_000)
  afterAll(async () => {
    await p?.close()
    await hub?.close()
    await be?.close()
  })

  async function post(headers: Record<string, string | string[]>) {
    const res = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"query":"{ whoami { tenant cookie } }"}' })
    const json = (await res.body.json()) as { data?: { whoami: Who }; errors?: { message: string; extensions: { code: string } }[] }
    return { status: res.statusCode, wwwAuthenticate: res.headers['www-authenticate'], who: json.data?.whoami, code: json.errors?.[0]?.extensions.code, message: json.errors?.[0]?.message }
  }

  it('a POST with the cookie alone gets the tenant of its token; the Cookie header reaches the backend as sent', async () => {
    const cookie = `theme=dark; igw_session=${await sign('acme')}; lang=en`
    const r = await post({ cookie })
    expect(r).toMatchObject({ status: 200, who: { tenant: 'acme', cookie } })
  })

  it('the header\'s token wins over the cookie, which is then not read', async () => {
    const cookie = `igw_session=${await sign('globex')}`
    expect(await post({ authorization: `Bearer ${await sign('acme')}`, cookie })).toMatchObject({ status: 200, who: { tenant: 'acme', cookie } })
    // Not a fallback: a refused header token is refused, whatever the cookie holds.
    const forged = await sign('acme', `${SECRET}-forged`)
    expect(await post({ authorization: `Bearer ${forged}`, cookie })).toMatchObject({ status: 401, code: 'UNAUTHENTICATED', message: 'token signature does not verify' })
    // A header without the prefix holds no token (Envoy's value_prefix): the cookie is read.
    expect(await post({ authorization: 'Basic dXNlcjpwYXNz', cookie })).toMatchObject({ status: 200, who: { tenant: 'globex' } })
    // The existing refusals stay: a token in the URL, several Authorization headers.
    const inUrl = await request(`${p.url}/graphql?access_token=x`, { method: 'POST', headers: { 'content-type': 'application/json', cookie }, body: '{"query":"{ whoami { tenant } }"}' })
    expect(inUrl.statusCode).toBe(400)
    expect(((await inUrl.body.json()) as { errors: { message: string }[] }).errors[0]!.message).toBe('a bearer token in the access_token query parameter is not accepted (send it in the authorization header or the igw_session cookie)')
    expect((await post({ authorization: ['Bearer a', 'Bearer b'], cookie })).status).toBe(400)
  })

  it('reads the named cookie among others: quoted, case-sensitive, first one wins, across several Cookie headers', async () => {
    const acme = await sign('acme')
    const globex = await sign('globex')
    expect(await post({ cookie: `a=1;igw_session="${acme}"; b="x=y"` })).toMatchObject({ status: 200, who: { tenant: 'acme' } })
    // Another cookie whose name differs in case only, or ends in the name, is not it.
    expect(await post({ cookie: `IGW_SESSION=${globex}; my_igw_session=${globex}; igw_session=${acme}` })).toMatchObject({ status: 200, who: { tenant: 'acme' } })
    expect(await post({ cookie: `igw_session=${acme}; igw_session=${globex}` })).toMatchObject({ status: 200, who: { tenant: 'acme' } })
    // Pieces without "=" name no cookie, before the name's piece and between others.
    expect(await post({ cookie: `flag; ${'x;'.repeat(2000)} a=1; other;igw_session=${globex}` })).toMatchObject({ status: 200, who: { tenant: 'globex' } })
    // Two Cookie header lines: node joins them with "; " (RFC 6265 §5.4), the backend gets both.
    const two = await post({ cookie: ['theme=dark', `igw_session=${globex}`] })
    expect(two).toMatchObject({ status: 200, who: { tenant: 'globex' } })
    expect(two.who?.cookie).toBe(`theme=dark; igw_session=${globex}`)
  })

  it('no token anywhere → 401 with the bare challenge', async () => {
    for (const cookie of [undefined, 'theme=dark; lang=en', 'igw_session=', 'igw_session=""', `igw_session ${await sign('acme')}`]) {
      const r = await post(cookie === undefined ? {} : { cookie })
      expect(r).toMatchObject({ status: 401, code: 'UNAUTHENTICATED', message: 'missing bearer token', wwwAuthenticate: 'Bearer realm="igw"' })
    }
  })

  it('a bad cookie token → 401 as a bad header token, counted, logged naming the cookie, never the token', async () => {
    const before = metricSum(await p.metricsText(), 'igw_jwt_verifications_total', 'result="invalid"')
    const forged = await sign('acme', `${SECRET}-forged`)
    const r = await post({ cookie: `igw_session=${forged}`, 'x-request-id': 'req-33a-forged' })
    expect(r).toMatchObject({ status: 401, code: 'UNAUTHENTICATED', message: 'token signature does not verify' })
    expect(r.wwwAuthenticate).toBe('Bearer realm="igw", error="invalid_token", error_description="token signature does not verify"')
    expect((await post({ cookie: 'igw_session=not.a.jwt' })).status).toBe(401)
    await expect.poll(async () => metricSum(await p.metricsText(), 'igw_jwt_verifications_total', 'route="c33a",result="invalid"') - before, { timeout: 10_000 }).toBe(2)
    const line = () => p.logs.find('tenant: request refused').find((l) => l.reqId === 'req-33a-forged')
    await expect.poll(line, { timeout: 10_000 }).toBeDefined()
    expect(line()).toMatchObject({ jwt: { result: 'invalid', source: 'cookie', reason: 'token signature does not verify' } })
    expect(p.logs.raw.some((l) => l.includes(forged))).toBe(false)
  })

  it('SSE (an EventSource GET) authenticated by the cookie', async () => {
    const cookie = `igw_session=${await sign('globex')}`
    const q = encodeURIComponent('subscription { whoami { tenant cookie } }')
    const res = await request(`${p.url}/graphql?query=${q}`, { headers: { accept: 'text/event-stream', cookie } })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/)
    const text = await res.body.text()
    const data = text.split('\n').find((l) => l.startsWith('data: {'))
    expect(JSON.parse(data!.slice(6))).toEqual({ data: { whoami: { tenant: 'globex', cookie } } })
    const refused = await request(`${p.url}/graphql?query=${q}`, { headers: { accept: 'text/event-stream', cookie: 'igw_session=' } })
    // An SSE-only client gets igw's refusal as the protocol's `next` event (decision 0020).
    expect(refused.statusCode).toBe(200)
    expect(refused.headers['content-type']).toMatch(/^text\/event-stream/)
    expect(await refused.body.text()).toContain('"code":"UNAUTHENTICATED"')
  })

  for (const mode of ['passthrough', 'terminate'] as const) {
    it(`a graphql-transport-ws subscription authenticated by the cookie on the upgrade (${mode})`, async () => {
      const proxy = mode === 'passthrough' ? p : hub
      const url = `ws://127.0.0.1:${proxy.port}/graphql`
      const cookie = `theme=dark; igw_session="${await sign('acme')}"`
      const seen = be.seen.length
      const ok = await subscribeWhoami(url, { cookie })
      expect(ok.error).toBeUndefined()
      expect(ok.values).toEqual([{ tenant: 'acme', cookie }])
      // The backend's own handshake carried the Cookie header unchanged, and the resolved tenant.
      expect(be.seen.slice(seen).some((h) => h.upgrade === 'websocket' && h.cookie === cookie && h['x-tenant-id'] === 'acme')).toBe(true)
      // The header still wins on the socket too.
      const both = await subscribeWhoami(url, { authorization: `Bearer ${await sign('globex')}`, cookie })
      expect(both.values.map((v) => v.tenant)).toEqual(['globex'])
      if (mode === 'terminate') {
        // So does a token the connection_init payload fills the header with (initPayloadHeaders).
        const payload = await subscribeWhoami(url, { cookie }, { authorization: `Bearer ${await sign('globex')}` })
        expect(payload.values.map((v) => v.tenant)).toEqual(['globex'])
      }
      // Without a token (or with a forged one in the cookie) nothing reaches the backend as a tenant.
      for (const bad of ['theme=dark', `igw_session=${await sign('acme', `${SECRET}-forged`)}`]) {
        const r = await subscribeWhoami(url, { cookie: bad })
        expect(r.values).toEqual([])
        expect(r.error).toBeDefined()
      }
    })
  }
})

describe('tenant sweep 33a: jwt.cookie in the config', () => {
  const doc = (cookie: unknown) => ({ listen: '127.0.0.1:0', tenants: { acme: {} }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant', jwt: { secret: SECRET, cookie } }] }] })

  it('takes an RFC 6265 cookie name, case kept', () => {
    const cfg = validateConfig(doc("Igw_Session.v2!#$%&'*+^`|~-"))
    expect((cfg.routes[0]!.filters[0] as { jwt: { cookie?: string } }).jwt.cookie).toBe("Igw_Session.v2!#$%&'*+^`|~-")
  })

  it('refuses anything else with an error naming the path', () => {
    for (const bad of ['', 'igw session', 'a=b', 'a;b', '"quoted"', 'a,b', 'ä', 42]) {
      expect(() => validateConfig(doc(bad))).toThrow(/routes\[0\]\.filters\[0\]\.jwt\.cookie: expected (a cookie name|string)/)
    }
  })

  it('a cookie name is no secret: /config and error messages show it, the secret beside it stays hidden', () => {
    const shown = JSON.stringify(redactConfig(doc('igw_session')))
    expect(shown).toContain('"cookie":"igw_session"')
    expect(shown).not.toContain(SECRET)
    expect(() => validateConfig(doc('igw session'))).toThrow(/got "igw session"/)
  })
})
