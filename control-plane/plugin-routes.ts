// POST /v1/plugins and GET /v1/plugins: signed plugin packages. Every upload the policy lets
// through (plugins.write) ends one of two ways, each audited in the signed log:
//   accepted  → stored, `plugins.upload` audit entry, igw_plugin_uploads_total{publisher}
//   refused   → 4xx problem naming the reason, `plugins.reject` audit entry, a warn log line,
//               igw_plugin_upload_rejections_total{reason} (unsigned|bad_signature|untrusted_publisher|malformed)
// A name@version that already exists, or a name another publisher publishes, is a 409: audited
// as `plugins.reject` too (reason version_exists | name_taken), but not counted, as the package
// itself is sound.
import type { Logger } from 'pino'
import { HttpError, pageLinks, readJson, sendJson, type RouteContext, type RouteDef } from './http-kit.ts'
import type { ControlPlaneMetrics } from './metrics.ts'
import { checkPackage, MAX_PACKAGE_BODY_BYTES, NAME_PATTERN, trustOf, type PackageDecision, type PluginTrust, type TrustedKeys } from './plugin-package.ts'
import { insertPlugin, listPlugins, PluginExists, PluginNameTaken, type PluginCursor, type PluginView } from './plugin-store.ts'
import { hasNul, integerQuery } from './request-values.ts'
import { ref } from './schemas.ts'
import type { ConfigStore } from './store.ts'

export interface PluginRouteDeps {
  store: ConfigStore
  trustedPublishers: TrustedKeys
  metrics: ControlPlaneMetrics
  logger: Logger
}

type Refusal = Extract<PackageDecision, { ok: false }>

/** GET /v1/plugins pages like the other lists (GET /v1/alerts): `limit` default 100, at most 1000. */
const DEFAULT_PAGE = 100
const MAX_PAGE = 1000

/** The cursor of a page's last plugin: opaque to clients (base64url JSON of its sort key). */
function pluginCursor(p: PluginView): string {
  return Buffer.from(JSON.stringify([p.name, Date.parse(p.uploadedAt), p.version])).toString('base64url')
}

function parsePluginCursor(raw: string): PluginCursor {
  let v: unknown
  // A name (64) and a version (64) with a timestamp fit in far less; anything longer is not ours.
  if (/^[\w-]{1,400}$/.test(raw)) {
    try {
      v = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'))
    } catch {
      v = undefined
    }
  }
  if (
    !Array.isArray(v) ||
    v.length !== 3 ||
    typeof v[0] !== 'string' ||
    !NAME_PATTERN.test(v[0]) ||
    !Number.isSafeInteger(v[1]) ||
    (v[1] as number) < 0 ||
    typeof v[2] !== 'string' ||
    v[2].length === 0 ||
    v[2].length > 64 ||
    hasNul(v[2])
  ) {
    const shown = raw.length > 60 ? `${raw.slice(0, 57)}…` : raw
    throw new HttpError(400, 'invalid cursor', { problems: [`cursor: expected the cursor of a previous page (its next link), got ${JSON.stringify(shown)}`] })
  }
  return { name: v[0], uploadedAt: v[1] as number, version: v[2] }
}

const problem = (description: string) => ({ description, schema: ref('Problem'), contentType: 'application/problem+json' })

/** malformed → 400 (413/415 when the body's size or type is wrong); a package that parses but is not trustworthy → 422. */
function statusOf(r: Refusal, bodyStatus: number | undefined): number {
  if (bodyStatus !== undefined) return bodyStatus
  return r.reason === 'malformed' ? 400 : 422
}

export function pluginRoutes(deps: PluginRouteDeps): RouteDef[] {
  const { store, metrics, logger } = deps

  async function refuse(ctx: RouteContext, r: Refusal, bodyStatus?: number): Promise<never> {
    const actor = ctx.subject?.sub ?? 'anonymous'
    metrics.reject(r.reason)
    const plugin = r.name !== undefined && r.version !== undefined ? `${r.name}@${r.version}` : undefined
    logger.warn({ actor, reason: r.reason, plugin, publisher: r.publisher, digest: r.digest, detail: r.message }, 'plugin upload refused')
    await store.audit({
      actor,
      action: 'plugins.reject',
      resource: plugin ? `plugins/${plugin}` : 'plugins',
      after: { reason: r.reason, detail: r.message, publisher: r.publisher ?? null, digest: r.digest === undefined ? null : `sha256:${r.digest}` },
    })
    // A body refused before it was read to its end (413 mid-stream, 415) leaves the rest of it on
    // the connection, which then answers nothing more: a pooled client's next request on it hung
    // until its own timeout (undici: 300 s) or failed with ECONNRESET. Closing it says so.
    const headers: Record<string, string> = ctx.req.complete ? {} : { connection: 'close' }
    throw new HttpError(statusOf(r, bodyStatus), r.message, { headers, extra: { reason: r.reason } })
  }

  return [
    {
      method: 'POST',
      path: '/v1/plugins',
      auth: { action: 'plugins.write', resource: () => ({ type: 'plugins' }) },
      doc: {
        summary: 'Upload a plugin package signed by a trusted publisher (plugins.write, audited; stored, not executed)',
        tags: ['plugins'],
        requestBody: ref('PluginPackage'),
        responses: {
          201: { description: 'signature verified with a trusted publisher key; stored', schema: ref('Plugin') },
          400: problem('malformed package (reason: malformed)'),
          401: problem('missing or invalid bearer token'),
          403: problem('denied by the admin policy (needs plugins.write)'),
          409: problem('this name@version exists (versions are immutable; build metadata does not make a new version), or another publisher publishes this name'),
          413: problem('body too large (reason: malformed)'),
          415: problem('not a JSON body (reason: malformed)'),
          422: problem('refused: reason unsigned, bad_signature or untrusted_publisher'),
          503: problem('the database is unavailable (retry; Retry-After)'),
        },
      },
      async handle(ctx) {
        let body: unknown
        try {
          body = await readJson(ctx.req, MAX_PACKAGE_BODY_BYTES)
        } catch (err) {
          if (err instanceof HttpError) await refuse(ctx, { ok: false, reason: 'malformed', message: `malformed plugin package: ${err.message}` }, err.status)
          throw err
        }
        const decision = checkPackage(body, deps.trustedPublishers)
        if (!decision.ok) return refuse(ctx, decision)
        const p = decision.plugin
        const actor = ctx.subject?.sub ?? 'anonymous'
        const now = Date.now()
        let view: PluginView | undefined
        try {
          await store.audit(
            { actor, action: 'plugins.upload', resource: `plugins/${p.name}@${p.version}`, after: { name: p.name, version: p.version, publisher: p.publisher, keyId: p.keyId, digest: `sha256:${p.digest}`, size: p.size } },
            async (tx) => {
              view = await insertPlugin(tx, p, actor, now)
            },
          )
        } catch (err) {
          if (!(err instanceof PluginExists) && !(err instanceof PluginNameTaken)) throw err
          // The upload's own entry rolled back with its insert: the refusal is audited on its own.
          const refusal = { detail: err.message, publisher: p.publisher, digest: `sha256:${p.digest}` }
          if (err instanceof PluginExists) {
            logger.info({ actor, plugin: `${p.name}@${p.version}`, digest: p.digest }, 'plugin upload conflicts with a stored version')
            await store.audit({ actor, action: 'plugins.reject', resource: `plugins/${p.name}@${p.version}`, after: { reason: 'version_exists', ...refusal, current: `sha256:${err.digest}` } })
            throw new HttpError(409, err.message, { extra: { current: `sha256:${err.digest}` } })
          }
          // A trusted publisher reaching for another's plugin name: worth a warning, not an alert reason.
          logger.warn({ actor, plugin: `${p.name}@${p.version}`, publisher: p.publisher, owner: err.owner, digest: p.digest }, 'plugin upload refused: the name belongs to another publisher')
          await store.audit({ actor, action: 'plugins.reject', resource: `plugins/${p.name}@${p.version}`, after: { reason: 'name_taken', ...refusal, owner: err.owner } })
          throw new HttpError(409, err.message)
        }
        metrics.pluginUploads.labels(p.publisher).inc()
        logger.info({ actor, plugin: `${p.name}@${p.version}`, publisher: p.publisher, keyId: p.keyId, digest: p.digest, size: p.size }, 'plugin uploaded')
        sendJson(ctx.res, 201, { ...view!, trust: 'trusted' satisfies PluginTrust })
      },
    },
    {
      method: 'GET',
      path: '/v1/plugins',
      auth: { action: 'admin.read', resource: () => ({ type: 'plugins' }) },
      doc: {
        summary: 'Stored plugin packages (metadata; artifacts are not returned)',
        tags: ['plugins'],
        query: [
          { name: 'name', description: 'only this plugin', schema: { type: 'string' } },
          { name: 'publisher', description: 'only this publisher', schema: { type: 'string' } },
          { name: 'trust', description: 'only plugins whose signing key is (`trusted`) or is no longer (`revoked`) in the trust file', schema: { type: 'string', enum: ['trusted', 'revoked'] } },
          { name: 'limit', description: `at most this many (default ${DEFAULT_PAGE})`, schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE } },
          { name: 'cursor', description: 'where the next page starts: the cursor in the previous page’s `next` (opaque)', schema: { type: 'string' } },
        ],
        responses: {
          200: { description: 'plugins by name, then upload order; a page at a time (the next page: `next` in the body, or the Link header)', schema: ref('PluginList'), link: true },
          400: problem(`limit is not an integer from 1 to ${MAX_PAGE}, or cursor not one this API gave`),
          401: problem('missing or invalid bearer token'),
          403: problem('denied by the admin policy'),
          503: problem('the database is unavailable (retry; Retry-After)'),
        },
      },
      async handle(ctx) {
        const name = ctx.query.get('name') || undefined
        const publisher = ctx.query.get('publisher') || undefined
        const limit = integerQuery(ctx.query, 'limit', DEFAULT_PAGE, { min: 1, max: MAX_PAGE })
        const rawCursor = ctx.query.get('cursor')
        const after = rawCursor === null ? undefined : parsePluginCursor(rawCursor)
        const wanted = ctx.query.get('trust') || undefined
        if (wanted !== undefined && wanted !== 'trusted' && wanted !== 'revoked') throw new HttpError(400, 'invalid trust', { problems: [`trust: expected "trusted" or "revoked", got ${JSON.stringify(wanted.length > 60 ? `${wanted.slice(0, 57)}…` : wanted)}`] })
        // Each plugin's standing under the trust file this instance runs with: a publisher key
        // removed from it (revoked) marks what it signed `revoked`, not listed like the rest.
        const judged = (rows: PluginView[]) => rows.map((p) => ({ ...p, trust: trustOf(p, deps.trustedPublishers) }))
        let items: (PluginView & { trust: PluginTrust })[]
        let more: boolean
        if (wanted === undefined) {
          // One more than the page: whether there is a next page, without a link to an empty one.
          const rows = await listPlugins(store.db, { ...(name ? { name } : {}), ...(publisher ? { publisher } : {}), limit: limit + 1, ...(after ? { after } : {}) })
          items = judged(rows.slice(0, limit))
          more = rows.length > limit
        } else {
          // The trust is not a column (it depends on the trust file): read in batches until the page is full.
          items = []
          more = false
          let from = after
          for (;;) {
            const rows = await listPlugins(store.db, { ...(name ? { name } : {}), ...(publisher ? { publisher } : {}), limit: MAX_PAGE, ...(from ? { after: from } : {}) })
            for (const p of judged(rows)) {
              if (p.trust !== wanted) continue
              if (items.length === limit) {
                more = true
                break
              }
              items.push(p)
            }
            if (more || rows.length < MAX_PAGE) break
            const last = rows.at(-1)!
            from = { name: last.name, uploadedAt: Date.parse(last.uploadedAt), version: last.version }
          }
        }
        const page = more ? pageLinks('/v1/plugins', { name, publisher, trust: wanted, limit: String(limit), cursor: pluginCursor(items.at(-1)!) }) : undefined
        sendJson(ctx.res, 200, { items, ...(page ? { next: page.next } : {}) }, page?.headers)
      },
    },
  ]
}
