// `igw control-plane`: the HTTP server wiring the store, the push hub, usage, auth and the APIs.
import type { KeyObject } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { pino, type Logger } from 'pino'
import { canonicalJson } from '../config/canonical-json.ts'
import { buildRoutes, type ApiDeps } from './api.ts'
import { auditRequestScope } from './audit.ts'
import { LRUCache } from 'lru-cache'
import { AuthError, Authenticator, Authorizer, type AuthOptions, type Subject } from './auth.ts'
import { DatabaseUnavailable, NulInText, openDb, StorageFull, type Db } from './db.ts'
import { loadDetokenizer } from './detokenize.ts'
import { createAdminYoga, requestSubjects } from './graphql-admin.ts'
import { bodyUnread, compile, HttpError, requestIdFor, sendJson, sendProblem, type CompiledRoute, type RouteContext } from './http-kit.ts'
import { ControlPlaneMetrics, startMetricsServer } from './metrics.ts'
import { buildOpenApi } from './openapi.ts'
import { trustOf, type TrustedKeys } from './plugin-package.ts'
import { listPlugins } from './plugin-store.ts'
import { NO_TRUSTED_KEYS } from './plugin-trust.ts'
import { PushHub } from './push.ts'
import { hasNul } from './request-values.ts'
import type { Doc } from './resources.ts'
import type { SigningKey } from './signing.ts'
import { CONFIG_CHANNEL, ConfigStore, NotFound, PreconditionFailed, ValidationFailed } from './store.ts'
import { UsageLedger } from './usage.ts'
import { UsedToday } from './used-today.ts'


/** Actions whose refusal (403) is audited: writes and reveals, not reads. */
const AUDITED_REFUSALS: ReadonlySet<string> = new Set(['admin.write', 'plugins.write', 'dlp.detokenize'])
export interface ControlPlaneOptions {
  /** sqlite:<path> | postgres://… */
  db: string
  host?: string
  port: number
  auth: AuthOptions
  signingKey: SigningKey
  /** Version 1 when the store is empty. */
  seed?: Doc
  /** Where `seed` was read from (--config), to name it when the store already holds a version and the seed is not used. */
  seedFile?: string
  logger?: Logger
  /** Publisher keys that may sign plugins (--plugin-trust); none: every signed upload is untrusted. */
  pluginTrust?: TrustedKeys
  /** Public keys of signing keys replaced before (--previous-keys): GET /v1/audit/verify checks the entries they signed with them. */
  previousKeys?: readonly KeyObject[]
  /** Serve GET /metrics (unauthenticated) on this address; undefined: metrics are kept but not served. */
  metricsListen?: { host?: string; port: number }
  /** A config stream whose proxy has not read for this long is closed (default 60 s; tests shorten it). */
  streamStallMs?: number
  /** How often the head is re-read as a safety net beside PostgreSQL's NOTIFY (default 5 s; tests lengthen it to watch NOTIFY alone). */
  headPollMs?: number
  /** close(): how long admin requests in flight may take to finish before their connections are cut (default 10 s). */
  shutdownGraceMs?: number
}

export interface ControlPlane {
  readonly url: string
  readonly port: number
  readonly store: ConfigStore
  readonly hub: PushHub
  readonly db: Db
  readonly openapi: Record<string, unknown>
  readonly metrics: ControlPlaneMetrics
  /** http://host:port of the metrics listener (GET /metrics), when one was asked for. */
  readonly metricsUrl: string | undefined
  close(): Promise<void>
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const logger = opts.logger ?? pino({ base: { component: 'control-plane' } })
  const db = openDb(opts.db)
  const store = new ConfigStore(db, opts.signingKey)
  try {
    await store.init(opts.seed)
  } catch (err) {
    await db.close()
    throw err
  }
  // A start that fails after this point closes what it opened, newest first, the database last:
  // a failed LISTEN or a taken --listen port left the pool and the LISTEN connection open (the
  // embedding process did not exit; a retried start piled up connections).
  const opened: (() => unknown)[] = [() => db.close()]
  const startFailed = async (err: unknown): Promise<never> => {
    for (const close of opened.reverse()) await Promise.resolve().then(close).catch(() => undefined)
    throw err
  }
  const authn = new Authenticator(opts.auth)
  const authorizer = await Authorizer.load().catch(startFailed)
  // The gauges read the hub at scrape time, which is after it exists.
  const metrics = new ControlPlaneMetrics({ proxiesConnected: () => hub.connected, headVersion: () => store.head()?.version ?? 0, streamBufferedBytes: () => hub.bufferedBytes })
  const hub = new PushHub(db, {
    onPush: () => metrics.pushes.inc(),
    onAck: (ok, info) => {
      metrics.acks.labels(ok ? 'ack' : 'nack').inc()
      // GET /v1/proxies shows a NACK until the proxy ACKs that version or a later one: the log keeps it.
      if (!ok) logger.warn({ proxy: info.proxyId, version: info.version, error: info.error }, 'config version NACKed by a proxy')
    },
    onDigestMismatch: (info) => {
      metrics.digestMismatches.inc()
      logger.warn({ proxy: info.proxyId, version: info.version, proxyDigest: info.proxyDigest, storeDigest: info.storeDigest }, "a proxy runs another document under this store's version number (the store was reset or restored and committed again up to it): sent it the head")
    },
    onStalled: (proxyId, bufferedBytes, stalledMs) => {
      metrics.streamDrops.labels('stalled').inc()
      logger.warn({ proxy: proxyId, bufferedBytes, stalledMs }, 'config stream closed: the proxy stopped reading it (it reconnects and gets the head)')
    },
    onExpired: (proxyId, endsAt) => {
      metrics.streamDrops.labels('token_expired').inc()
      logger.info({ proxy: proxyId, tokenEndsAt: new Date(endsAt).toISOString() }, 'config stream ended: its token is no longer accepted (the proxy reconnects with its current token)')
    },
  }, opts.streamStallMs === undefined ? {} : { stallMs: opts.streamStallMs })
  const usage = new UsageLedger(db, opts.signingKey)
  const usedToday = new UsedToday(usage)
  opened.push(() => hub.close(), () => usedToday.close())
  /**
   * A refused write (admin.write, plugins.write) or attempt to reveal tokenized values is itself a
   * security event: a warn line, and an audit entry `<action>.denied` (who, what, why; never the
   * tokens) — once per actor and action a minute (a caller repeating a refused call must not fill
   * the signed log or hold its write lock), and never at the cost of the 403 (a database down).
   * Refused writes were not audited at all: a token probing what it may change left no trace.
   */
  const refused = async (actor: string, action: string, resource: string, after: Record<string, unknown>): Promise<void> => {
    logger.warn({ actor, action, resource, reason: after.reason }, action === 'dlp.detokenize' ? 'detokenize refused' : `${action} refused`)
    const key = `${action}\0${actor}`
    if (deniedAudited.has(key)) return
    deniedAudited.set(key, true)
    await store.audit({ actor, action: `${action}.denied`, resource, after }).catch((e: unknown) => logger.error({ err: e, actor }, `could not audit a refused ${action} call`))
  }
  /** A refused read or proxy call: a warn line (with the request id), never an audit entry. */
  const refusedRead = (actor: string, action: string, resource: string, reason: string, tenant?: string): void => {
    logger.warn({ requestId: auditRequestScope.getStore(), actor, action, resource, reason, ...(tenant === undefined ? {} : { tenant }) }, `${action} refused`)
  }
  const deps: ApiDeps = { refused, refusedRead, store, hub, usage, authorizer, detokenizer: await loadDetokenizer().catch(startFailed), usedToday, trustedPublishers: opts.pluginTrust ?? NO_TRUSTED_KEYS, metrics, logger, auditKeys: [opts.signingKey.publicKey, ...(opts.previousKeys ?? [])] }
  store.on('committed', () => metrics.commits.inc())
  store.on('audited', (action) => metrics.auditAppends.labels(action).inc())
  store.on('rewound', (head, previous) => {
    // The database holds an older head (or another document under the same number) than this
    // instance held: restored from a backup or failed over while it ran.
    logger.warn({ version: head.version, digest: head.digest, previousVersion: previous.version, previousDigest: previous.digest }, "the database's config head went back (restored from a backup, or failed over to a replica without the last commits): serving and pushing its head")
    hub.rewound(head)
  })
  store.on('version', (head) => {
    hub.publish(head)
    logger.info({ version: head.version, author: head.author }, 'config version committed')
  })
  // A new signing key starts its period in the audit chain before anything else is written (not
  // only when a head signed by a --previous-keys key is signed again): until its first entry, the
  // old key could re-sign the whole tail and the new key would vanish from the chain.
  try {
    const marked = await store.markSigningKey()
    if (marked !== undefined) logger.info({ seq: marked.seq, previousKeyId: marked.previousKeyId, keyId: opts.signingKey.keyId }, 'the newest audit entry was signed by another key: audit entry audit.key_rotated, signed by this key, starts its period in the chain')
  } catch (err) {
    logger.error({ err }, 'could not append the audit entry that starts this signing key\'s period (audit.key_rotated): until this key signs an entry, whoever holds the previous key can re-sign the audit log\'s tail undetected')
  }
  // A key replaced on purpose (--previous-keys names the old one): the head it signed is signed
  // again with this key before any stream opens, so proxies pinned to the new key take it at once.
  // Best effort: on a failure the warning below says what proxies will see.
  if (opts.previousKeys !== undefined && opts.previousKeys.length > 0) {
    try {
      const r = await store.resignHead(opts.previousKeys)
      if (r?.resigned) logger.info({ headVersion: r.version, previousKeyId: r.keyId, keyId: opts.signingKey.keyId }, 'the head config version, signed by a previous key, is signed again with this key (new proxies pinned to it take it)')
      else if (r !== undefined) logger.warn({ headVersion: r.version, headKeyId: r.keyId }, 'the head config version does not verify with this key or any of --previous-keys (another key signed it, or its row was edited): it is not signed again')
    } catch (err) {
      logger.warn({ err }, 'could not sign the head config version again with this key')
    }
  }
  // Several instances on one PostgreSQL: a commit elsewhere arrives as a NOTIFY; a slow poll
  // covers a lost notification connection (and a second process on the same SQLite file).
  // The LISTEN connection is opened again when it is lost, and the head re-read then (a commit
  // made meanwhile sent its NOTIFY to nobody).
  const refreshHead = () => void store.refresh().catch(() => undefined)
  const stopListening = db.listen ? await db.listen(CONFIG_CHANNEL, refreshHead, refreshHead).catch(startFailed) : undefined
  const poll = setInterval(refreshHead, opts.headPollMs ?? 5_000)
  poll.unref()
  opened.push(() => stopListening?.(), () => clearInterval(poll))
  const defs = buildRoutes(deps)
  const routes: CompiledRoute[] = defs.map(compile)
  const openapi = buildOpenApi(defs)
  const openapiText = JSON.stringify(openapi)
  const yoga = createAdminYoga(deps)

  /** `seen.route` is the route template once known, so 401/403/404 are counted under their route. */
  async function handle(req: IncomingMessage, res: ServerResponse, seen: { route: string; counted: boolean; actor?: string }): Promise<void> {
    // An absolute-form target Node's parser lets through but WHATWG URL refuses
    // (`GET http://x:99999/…`, `http://[/…`) is the client's error: a 400, not a 500 logged as a bug.
    // An origin-form target is a path: resolved against a base, `//v1/config` read as a
    // network-path reference (host "v1") answered "no endpoint GET /config".
    const target = req.url ?? '/'
    const url = target.startsWith('/') ? URL.parse(`http://control-plane${target}`) : URL.parse(target, 'http://control-plane')
    if (url === null) throw new HttpError(400, 'invalid request target', { problems: [`request target: ${JSON.stringify((req.url ?? '').slice(0, 60))} is not a valid URL`] })
    // HEAD is GET without the body (RFC 9110 §9.3.2): the same handler runs and Node's response
    // drops the body of a HEAD request, keeping status, ETag and Content-Length.
    const method = req.method === 'HEAD' ? 'GET' : req.method
    if (url.pathname === '/openapi.json' || url.pathname === '/graphql') seen.route = url.pathname
    if (url.pathname === '/openapi.json' && method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(openapiText)), ...(bodyUnread(req) ? { connection: 'close' } : {}) }).end(openapiText)
      return
    }
    // The document exists, only not for this method: 405 with Allow, as on the REST routes (a 404 said there was none).
    if (url.pathname === '/openapi.json') throw new HttpError(405, `${req.method} is not allowed here (allowed: GET, HEAD)`, { headers: { allow: 'GET, HEAD' } })
    if (url.pathname === '/graphql') {
      let subject: Subject
      try {
        subject = await authn.authenticate(req.headers.authorization)
      } catch (err) {
        const e = err as AuthError
        sendJson(res, 401, { errors: [{ message: e.message, extensions: { code: 'UNAUTHENTICATED' } }] }, { 'www-authenticate': bearerChallenge(e) })
        return
      }
      requestSubjects.set(req, subject)
      // HEAD is GET without the body (RFC 9110 §9.3.2) here too: yoga answers a HEAD with 405
      // (a monitor's HEAD probe of /graphql failed). It runs as the GET it stands for; the
      // response object was made for a HEAD request, so Node still sends no body.
      if (req.method === 'HEAD') req.method = 'GET'
      await yoga.handle(req, res, { req })
      return
    }
    let allowed: string[] = []
    for (const r of routes) {
      const m = r.regex.exec(url.pathname)
      if (m === null) continue
      if (seen.route === UNMATCHED) seen.route = r.path
      if (r.method !== method) {
        allowed.push(r.method)
        if (r.method === 'GET') allowed.push('HEAD')
        continue
      }
      seen.route = r.path
      const params = pathParams(r.names, m)
      refuseNulInQuery(url.searchParams)
      const ctx: RouteContext = { req, res, params, query: url.searchParams, subject: undefined }
      if (r.auth) {
        ctx.subject = await authn.authenticate(req.headers.authorization)
        seen.actor = ctx.subject.sub
        const justification = req.headers['x-justification']
        try {
          authorizer.require(ctx.subject, r.auth.action, r.auth.resource(params, url.searchParams, ctx.subject), typeof justification === 'string' ? { justification } : {})
        } catch (err) {
          if (AUDITED_REFUSALS.has(r.auth.action) && err instanceof AuthError && err.status === 403) {
            const after: Record<string, unknown> = { reason: err.message, request: `${method} ${url.pathname}` }
            if (r.auth.action === 'dlp.detokenize') after.justification = typeof justification === 'string' ? justification.slice(0, 1024) : null
            await refused(ctx.subject.sub, r.auth.action, r.auth.action === 'dlp.detokenize' ? 'dlp/tokens' : url.pathname.replace(/^\/v1\//, ''), after)
          } else if (err instanceof AuthError && err.status === 403) {
            // A refused read (a tenant-scoped token reading another tenant's quotas, statement or
            // alerts; a proxy token reading the config) is logged, not audited: unlogged, a token
            // probing what it may read left no trace at all.
            refusedRead(ctx.subject.sub, r.auth.action, url.pathname.replace(/^\/v1\//, ''), err.message)
          }
          throw err
        }
      }
      await r.handle(ctx)
      return
    }
    allowed = [...new Set(allowed)]
    if (allowed.length) throw new HttpError(405, `${req.method} is not allowed here (allowed: ${allowed.join(', ')})`, { headers: { allow: allowed.join(', ') } })
    throw new HttpError(404, `no endpoint ${req.method} ${url.pathname} (see /openapi.json)`)
  }

  /** Actors and actions whose refusal was audited within the last minute. */
  const deniedAudited = new LRUCache<string, true>({ max: 10_000, ttl: 60_000 })

  /** Responses not finished yet, with their route (config streams are ended by the hub, not waited for), for a graceful close(). */
  const inFlight = new Map<ServerResponse, { route: string }>()
  /** Admin requests in flight: not config streams, which close() ends (a stalled one would never finish). */
  const pendingRequests = () => {
    let n = 0
    for (const seen of inFlight.values()) if (seen.route !== STREAM_ROUTE) n++
    return n
  }
  let drained: (() => void) | undefined
  let closing = false

  const server: Server = createServer((req, res) => {
    const t0 = performance.now()
    const seen: { route: string; counted: boolean; actor?: string } = { route: UNMATCHED, counted: false }
    // As it came: a HEAD of /graphql runs as GET (handle), and is still counted as a HEAD.
    const method = req.method
    // Kept when the caller sent a sane one (a proxy or a gateway in front), made up otherwise; it
    // names the log line of a failed request, whose details the client is never shown, and the
    // audit entry of the change it makes.
    const requestId = requestIdFor(req)
    res.setHeader('x-request-id', requestId)
    // Shutting down: answered, but the connection is not kept for another request.
    if (closing) res.setHeader('connection', 'close')
    inFlight.set(res, seen)
    res.once('close', () => {
      inFlight.delete(res)
      if (drained !== undefined && pendingRequests() === 0) drained()
    })
    // Counted when the response is handed to the socket ('finish'), or when the connection ends
    // first ('close': a client that went away, or the end of a config stream).
    const count = () => {
      if (seen.counted) return
      seen.counted = true
      // The config stream's duration is a connection's lifetime, not a latency: counted only.
      metrics.request(seen.route, method, res.headersSent ? String(res.statusCode) : 'aborted', seen.route === STREAM_ROUTE ? undefined : (performance.now() - t0) / 1000)
    }
    res.once('finish', count)
    res.once('close', count)
    auditRequestScope.run(requestId, () => handle(req, res, seen)).catch((err: unknown) => {
      // The client closed the connection before its body had all arrived: nobody is left to answer
      // (the request counter shows it as aborted). Not a failure of this server to log as one.
      if (clientWentAway(err, req)) {
        logger.info({ requestId, method: req.method, url: req.url }, 'request abandoned: the client closed the connection before sending its whole body')
        res.destroy()
        return
      }
      const e = toHttpError(err, requestId)
      if (err instanceof StorageFull) metrics.storageFull.inc()
      if (e.status >= 500) {
        // An expected state the answer explains (no config yet: PUT /v1/config first) is not a
        // failure to page on: warned, with its reason, not "request failed" at error level.
        if (e.logLevel === 'warn') logger.warn({ requestId, method: req.method, url: req.url, status: e.status, reason: e.message }, 'request refused')
        else logger.error({ err, requestId, method: req.method, url: req.url, status: e.status }, err instanceof DatabaseUnavailable ? 'request failed: the database is unavailable' : err instanceof StorageFull ? 'request failed: the database is out of disk space (nothing of the change was kept)' : 'request failed')
      } else if (seen.actor !== undefined && WRITE_METHODS.has(method ?? '') && e.status !== 403 && !SELF_LOGGED_REFUSALS.has(seen.route)) {
        // A refused write (an invalid document, a stale If-Match, a delete of something in use)
        // commits nothing and so leaves no audit entry: without this line a config push that CI
        // saw fail left no trace on the control plane. Only an authenticated caller's (a 401, or
        // a scanner's 404 before any token check, would be noise); a 403 is logged (and audited)
        // where it is decided. The problems are already redacted (they quote no secret).
        logger.info({ requestId, actor: seen.actor, method, path: req.url?.split('?')[0], status: e.status, reason: e.message, ...(e.problems ? { problems: e.problems.slice(0, 20) } : {}), ...(typeof e.extra.current === 'string' ? { current: e.extra.current } : {}) }, 'write refused')
      }
      if (res.headersSent) {
        res.destroy()
        return
      }
      sendProblem(res, e)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: opts.host, port: opts.port }, resolve)
  }).catch(startFailed)
  const addr = server.address()
  const port = typeof addr === 'object' && addr ? addr.port : opts.port
  const url = `http://${hostForUrl(opts.host)}:${port}`
  let metricsServer: Server | undefined
  let metricsUrl: string | undefined
  if (opts.metricsListen !== undefined) {
    try {
      const m = await startMetricsServer(metrics, opts.metricsListen.host, opts.metricsListen.port)
      metricsServer = m.server
      metricsUrl = `http://${hostForUrl(opts.metricsListen.host)}:${m.port}`
    } catch (err) {
      // Nothing is left running when the start fails (--metrics-listen taken).
      opened.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
      return startFailed(err)
    }
  }
  // Replicas on one database must share one signing key: proxies pin the key of the snapshots
  // they get, and refuse (NACK) a version another replica signs with a key of its own. A head
  // signed by another key is what that looks like from here (or a deliberate key replacement).
  const headKey = store.head()?.envelope.keyId
  if (headKey && headKey !== opts.signingKey.keyId) {
    logger.warn(
      { headVersion: store.head()!.version, headKeyId: headKey, keyId: opts.signingKey.keyId },
      'the head config version was signed with another key than this instance holds: proxies pinned to that key will refuse the versions this instance commits; give every replica the same --signing-key (or, after replacing the key on purpose, re-pin the proxies and pass the old key with --previous-keys, which has the head signed again with this one)',
    )
  }
  // The seed only ever fills an empty store: a --config edited and rolled out later was ignored
  // without a word, and the operator believed the proxies ran it.
  const head = store.head()
  if (opts.seed !== undefined && !store.seeded && head !== undefined) {
    const seed = opts.seedFile ?? 'the seed document'
    const differs = canonicalJson(opts.seed) !== canonicalJson(head.document)
    logger.warn(
      { seedFile: opts.seedFile, headVersion: head.version, differsFromHead: differs },
      `${seed} (--config) was not used: the store already holds config version ${head.version}, and a seed is only committed into an empty store${differs ? '; it differs from that version: change the config through the API (PUT /v1/config), not the file' : ''}`,
    )
  }
  // Stored plugins signed by keys the trust file no longer holds (revoked): said once at start, as
  // GET /v1/plugins marks them `trust: "revoked"`. Best effort: a failure here stops nothing.
  try {
    const revoked = (await listPlugins(db)).filter((p) => trustOf(p, deps.trustedPublishers) === 'revoked')
    if (revoked.length > 0) {
      logger.warn(
        { plugins: revoked.slice(0, 20).map((p) => `${p.publisher}/${p.name}@${p.version}`), count: revoked.length, keyIds: [...new Set(revoked.map((p) => `${p.publisher}:${p.keyId}`))].slice(0, 20) },
        'stored plugins are signed by keys the plugin trust file no longer holds (revoked): GET /v1/plugins lists them as trust "revoked" (?trust=revoked)',
      )
    }
  } catch (err) {
    logger.warn({ err }, 'could not check the stored plugins against the plugin trust file')
  }
  logger.info({ listen: `${opts.host ?? '*'}:${port}`, ...(metricsUrl ? { metrics: `${opts.metricsListen!.host ?? '*'}:${new URL(metricsUrl).port}` } : {}), db: db.kind, version: store.head()?.version ?? 0, keyId: opts.signingKey.keyId, pluginPublishers: deps.trustedPublishers.size }, 'igw control plane listening')

  return {
    url,
    port,
    store,
    hub,
    db,
    openapi,
    metrics,
    metricsUrl,
    async close() {
      // Graceful (SIGTERM): stop accepting, end the config streams (their proxies reconnect to
      // another instance), let admin requests in flight finish — a write being committed gets its
      // answer instead of a reset connection — up to the grace period, then cut what is left. The
      // database stays open until then: the requests in flight need it.
      closing = true
      clearInterval(poll)
      await stopListening?.()
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      // Connections idle between requests: nothing in flight on them.
      server.closeIdleConnections()
      await hub.close()
      if (pendingRequests() > 0) {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          new Promise<void>((resolve) => (drained = resolve)),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, opts.shutdownGraceMs ?? 10_000))),
        ])
        clearTimeout(timer)
        if (pendingRequests() > 0) logger.warn({ requests: pendingRequests(), graceMs: opts.shutdownGraceMs ?? 10_000 }, 'shutting down: admin requests still in flight after the grace period were cut')
      }
      server.closeAllConnections()
      await stopped
      await usedToday.close()
      if (metricsServer) {
        const ms = metricsServer
        await new Promise<void>((resolve) => {
          ms.close(() => resolve())
          ms.closeAllConnections()
        })
      }
      await db.close()
    },
  }
}

const UNMATCHED = 'unmatched'
const STREAM_ROUTE = '/v1/stream'

/** Path parameters, percent-decoded; a segment that is not valid UTF-8 percent-encoding or holds NUL is a 400. */
function pathParams(names: string[], m: RegExpExecArray): Record<string, string> {
  const params: Record<string, string> = {}
  names.forEach((n, i) => {
    const raw = m[i + 1]!
    let value: string
    try {
      value = decodeURIComponent(raw)
    } catch {
      throw new HttpError(400, `invalid path parameter ${n}`, { problems: [`${n}: "${raw.length > 60 ? `${raw.slice(0, 57)}…` : raw}" is not valid percent-encoded UTF-8`] })
    }
    if (hasNul(value)) throw new HttpError(400, `invalid path parameter ${n}`, { problems: [`${n}: must not contain a NUL character (U+0000)`] })
    params[n] = value
  })
  return params
}

/** Query values are ids and filters that reach SQL: NUL in one is refused here, for every endpoint. */
function refuseNulInQuery(query: URLSearchParams): void {
  for (const [k, v] of query) {
    if (hasNul(k) || hasNul(v)) throw new HttpError(400, 'invalid query parameter', { problems: [`${hasNul(k) ? 'query parameter name' : k}: must not contain a NUL character (U+0000)`] })
  }
}

/** Reading the body failed because the client went away mid-body (Node's "aborted" ECONNRESET on the request). */
function clientWentAway(err: unknown, req: IncomingMessage): boolean {
  return !req.complete && err instanceof Error && (err as NodeJS.ErrnoException).code === 'ECONNRESET' && err.message === 'aborted'
}

/** Methods whose refusal (4xx) is logged as `write refused`. */
const WRITE_METHODS = new Set(['PUT', 'POST', 'DELETE', 'PATCH'])
/** Routes that log their own refusals (`plugin upload refused`, GraphQL's limit refusals). */
const SELF_LOGGED_REFUSALS = new Set(['/v1/plugins', '/graphql'])

/**
 * The WWW-Authenticate challenge of a 401 (REST and /graphql alike); a quote would end
 * error_description early. A request with no bearer token gets a challenge without an error code
 * (RFC 6750 §3.1, as the data plane answers): `invalid_token` tells a client's auth library that
 * the token it sent was refused (expired, revoked), and some refresh it and retry in a loop.
 */
function bearerChallenge(err: AuthError): string {
  if (!err.credentials) return 'Bearer realm="igw-control-plane"'
  return `Bearer error="invalid_token", error_description="${err.message.replace(/"/g, "'")}"`
}

/** A listen host as it goes in a URL (wildcards: loopback). */
function hostForUrl(host: string | undefined): string {
  if (!host || host === '0.0.0.0' || host === '::') return '127.0.0.1'
  return host.includes(':') ? `[${host}]` : host
}

/**
 * The problem a thrown error becomes. Anything not anticipated is a 500 whose text is generic:
 * driver and runtime messages (SQL, file paths, stack overflows) go to the log under the request
 * id, which the answer carries so an operator can find them.
 */
function toHttpError(err: unknown, requestId: string): HttpError {
  if (err instanceof HttpError) return err
  if (err instanceof AuthError) return new HttpError(err.status, err.message, err.status === 401 ? { headers: { 'www-authenticate': bearerChallenge(err) } } : {})
  if (err instanceof ValidationFailed) return new HttpError(400, 'the change would make the config document invalid', { problems: err.problems })
  if (err instanceof PreconditionFailed) return new HttpError(412, err.message, err.current ? { headers: { etag: err.current }, extra: { current: err.current } } : {})
  if (err instanceof NotFound) return new HttpError(404, err.message)
  if (err instanceof NulInText) return new HttpError(400, err.message)
  if (err instanceof StorageFull) {
    // Not the request's fault and not a bug: the same request succeeds once space is freed.
    return new HttpError(503, `the database is out of disk space; nothing was changed, try again once space is freed (request id ${requestId})`, { headers: { 'retry-after': '30' }, extra: { code: 'STORAGE_FULL', requestId } })
  }
  if (err instanceof DatabaseUnavailable) {
    return new HttpError(503, `the database is unavailable; try again shortly (request id ${requestId})`, { headers: { 'retry-after': '5' }, extra: { requestId } })
  }
  return new HttpError(500, `internal error (request id ${requestId}; the control plane log has the details)`, { extra: { requestId } })
}
