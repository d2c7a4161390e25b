// The REST API: one table of routes. Each entry says who may call it (an ABAC action on a
// resource), how it is documented (OpenAPI, generated from this table) and what it does.
import { createHash, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { decodeJwt } from 'jose'
import { LRUCache } from 'lru-cache'
import { POLICY_BUNDLES, bundlePath } from '../policies/catalog.ts'
import { listAudit, verifyAudit } from './audit.ts'
import { AuthError, CLOCK_TOLERANCE_S, type Authorizer, type Subject } from './auth.ts'
import { etagOf, type Change } from '../config/canonical-json.ts'
import { redactConfig } from '../config/redact.ts'
import type { Db } from './db.ts'
import type { Detokenizer } from './detokenize.ts'
import { bodyUnread, HttpError, pageLinks, readJson, sendJson, type RouteDef, type RouteContext } from './http-kit.ts'
import { pluginRoutes, type PluginRouteDeps } from './plugin-routes.ts'
import type { PushHub } from './push.ts'
import { dailyLimits, isQuotaKind, readQuotaLimits, writeQuotaLimit, type QuotaKind } from './quota-section.ts'
import { COLLECTIONS, SECTIONS, getAt, getItem, listItems, putItem, setAt, type CollectionSpec, type Doc, type SectionSpec } from './resources.ts'
import { dateTimeQuery, digestParam, hasNul, integerParam, integerQuery, isCalendarDate } from './request-values.ts'
import { itemSchemaName, ref } from './schemas.ts'
import { NotFound, PreconditionFailed, type ConfigStore, type Head } from './store.ts'
import { daysBefore, localDay, MAX_BOOT_ID_LENGTH, USAGE_COUNTER_MAX, validateReport, type UsageLedger } from './usage.ts'
import type { UsedToday } from './used-today.ts'

/** Longer than any token the DLP tokenizer makes (it refuses them too: filters/dlp/tokenizer.ts). */
const MAX_TOKEN_CHARS = 16_384

export interface ApiDeps extends PluginRouteDeps {
  store: ConfigStore
  hub: PushHub
  usage: UsageLedger
  authorizer: Authorizer
  detokenizer: Detokenizer | undefined
  usedToday: UsedToday
  /** The keys GET /v1/audit/verify checks entries with: this instance's, then those it replaced (--previous-keys). Default: this instance's. */
  auditKeys?: readonly KeyObject[]
  /** A refused write or reveal (a 403 from the policy): logged, and audited as `<action>.denied`. Never throws. */
  refused?: (actor: string, action: string, resource: string, after: Record<string, unknown>) => Promise<void>
  /** A refused read (a 403 from the policy on admin.read or proxy.sync): logged only. */
  refusedRead?: (actor: string, action: string, resource: string, reason: string, tenant?: string) => void
}

/** How far a usage report's `at` may be from this clock and still decide its day (see /v1/usage). */
const MAX_USAGE_AHEAD_MS = 5 * 60_000
const MAX_USAGE_BEHIND_MS = 35 * 86_400_000

const actorOf = (ctx: RouteContext) => ctx.subject?.sub ?? 'anonymous'
const problem = (desc = 'error'): { description: string; schema: Record<string, unknown>; contentType: string } => ({ description: desc, schema: ref('Problem'), contentType: 'application/problem+json' })
const COMMON = { 401: problem('missing or invalid bearer token'), 403: problem('denied by the admin policy'), 503: problem('the database is unavailable, or there is no config yet (retry; Retry-After)') }
/** A GET that sends an ETag answers If-None-Match holding it with 304 (http-kit.ts sendJson). */
const NOT_MODIFIED = { 304: { description: 'If-None-Match holds the current ETag (or *): not modified, no body', etag: true } }
/** The routes a proxy calls as itself: a token with a `proxy` claim may name no other proxy id. */
const PROXY_FORBIDDEN = { 403: problem('denied by the admin policy, or the token is bound to another proxy id (its "proxy" claim)') }
const WRITE_ERRORS = { ...COMMON, 400: problem('the resulting document is invalid (problems name the paths)'), 412: problem('If-Match does not match the current ETag') }
/** A write that can grow the document: bounded (store.ts MAX_DOCUMENT_BYTES); a delete never grows it. */
const PUT_ERRORS = { ...WRITE_ERRORS, 413: problem('the body is over 4 MiB, or the config document would be over 16 MiB (canonical JSON)') }

function requireHead(store: ConfigStore): Head {
  const h = store.head()
  if (h === undefined) throw new HttpError(503, 'the control plane has no config yet: PUT /v1/config first', { logLevel: 'warn' })
  return h
}

/** One entity-tag of an If-Match list (RFC 9110 §8.8.3): `"…"` or weak `W/"…"`. */
const ENTITY_TAG = /^(W\/)?"[\x21\x23-\x7e\x80-\xff]*"$/

/**
 * If-Match (RFC 9110 §13.1.1): `*` alone, or a list of entity-tags compared strongly — a weak tag
 * (`W/"…"`) never matches, and `*` is not a tag (`W/*`, `"a", *` are malformed: 400, not "any").
 */
function ifMatchAccepts(name: string, header: string, etag: string | undefined): boolean {
  if (header.trim() === '*') return etag !== undefined
  const tags = entityTags(name, header) // a malformed list is a 400 even when nothing exists
  return etag !== undefined && tags.includes(etag)
}

/**
 * If-Match against the current value (undefined: it does not exist): PreconditionFailed (a 412)
 * when it does not hold. `name` is what a refusal names: the header, or GraphQL's `ifMatch`
 * argument, which takes the same ETags with the same semantics.
 */
export function checkIfMatch(ifMatch: string, current: unknown, name = 'If-Match'): void {
  const etag = current === undefined ? undefined : etagOf(current)
  if (!ifMatchAccepts(name, ifMatch, etag)) {
    if (etag === undefined) throw new PreconditionFailed(`${name} given but the resource does not exist`, etag)
    // The current ETag, weakened: nobody changed anything, and "GET it again" gave the same W/
    // tag back forever (nginx weakens the ETag of a response it gzips).
    if (ifMatch.trim() !== '*' && entityTags(name, ifMatch).includes(`W/${etag}`)) {
      throw new PreconditionFailed(`${name} ${ifMatch} is the current ETag ${etag} made weak (W/, as a proxy that compresses responses marks it), and ${name} compares strongly (RFC 9110): send the ETag without W/ (the current one is in "current")`, etag)
    }
    throw new PreconditionFailed(`${name} ${ifMatch} does not match the current ETag ${etag} (someone changed it; GET it again)`, etag)
  }
}

/** The entity tags of an If-Match / If-None-Match list (not `*`); anything else is a 400 naming the header. */
function entityTags(name: string, header: string): string[] {
  const tags = header.split(',').map((t) => t.trim()).filter((t) => t !== '')
  if (tags.length === 0 || !tags.every((t) => ENTITY_TAG.test(t))) {
    throw new HttpError(400, `malformed ${name}`, { problems: [`${name}: expected * or a list of entity tags ("…" or W/"…"), got ${JSON.stringify(header.length > 80 ? `${header.slice(0, 77)}…` : header)}`] })
  }
  return tags
}

/**
 * If-Match / If-None-Match against the current ETag of the thing being written. `exists`: a
 * section not set yet still has an ETag (that of `null`, which GET shows, so If-Match works on
 * it) but does not exist for `If-None-Match: *` (create only if absent).
 */
function checkPreconditions(ctx: RouteContext, current: unknown, exists = current !== undefined): void {
  const ifMatch = ctx.req.headers['if-match']
  const ifNoneMatch = ctx.req.headers['if-none-match']
  const etag = current === undefined ? undefined : etagOf(current)
  if (ifMatch !== undefined) checkIfMatch(ifMatch, current)
  if (ifNoneMatch === undefined) return
  if (ifNoneMatch.trim() === '*') {
    if (exists && etag !== undefined) throw new PreconditionFailed('If-None-Match: * but the resource exists', etag)
    return
  }
  // A list of entity tags (RFC 9110 §13.1.2, weak comparison): the write is refused when the
  // current representation is one of them. It was ignored, so the condition never held.
  const tags = entityTags('If-None-Match', ifNoneMatch)
  const weak = (t: string) => (t.startsWith('W/') ? t.slice(2) : t)
  if (exists && etag !== undefined && tags.some((t) => weak(t) === weak(etag))) throw new PreconditionFailed(`If-None-Match ${ifNoneMatch} matches the current ETag ${etag}`, etag)
}

/**
 * Whose alerts GET /v1/alerts lists: `?tenant=`, else the caller's tenant claim, else all. An empty
 * `?tenant=` is "not given" — read once here for the policy and the query alike, so a
 * tenant-scoped caller can never be authorized for its tenant and then listed every tenant's.
 */
function alertsTenant(q: URLSearchParams, subject: Subject): string | undefined {
  const asked = q.get('tenant')
  return asked !== null && asked !== '' ? asked : subject.tenant
}

/**
 * Secrets in the document (a tenant filter's JWT secret, a Redis password, cursor keys, webhook
 * credentials) are for those who may change what they read: a caller the policy allows to read
 * but not to write `resource` (a viewer, a DLP reviewer, a tenant-scoped admin reading the whole
 * document) gets them redacted, as the proxy's /config shows them. A JWT secret read by a viewer
 * would let it mint any tenant's tokens for the data plane.
 */
/** Keys named in a problem: the first ten, each cut at 80 characters, and the count past that. */
function namedKeys(keys: string[]): string {
  return keys.slice(0, 10).map((k) => JSON.stringify(k.length > 80 ? `${k.slice(0, 77)}…` : k)).join(', ') + (keys.length > 10 ? `, … (${keys.length} in all)` : '')
}

/** A body may leave out the name its path gives, or repeat it; another name is a 400, not a silent rename. */
function namedAsPath(body: Record<string, unknown>, id: string, where: string): void {
  if (!Object.hasOwn(body, 'name') || body.name === id) return
  throw new HttpError(400, `the body names another item than the path`, { problems: [`name: expected ${JSON.stringify(id)} (the name in the path ${where}/${id}) or nothing, got ${typeof body.name === 'string' ? namedKeys([body.name]) : JSON.stringify(body.name)?.slice(0, 80)}; to rename, PUT the item under its new name and DELETE the old one`] })
}

function readable(deps: ApiDeps, ctx: RouteContext, resource: { type: string; id?: string; tenant?: string }, value: unknown, path: readonly PropertyKey[]): unknown {
  return mayWrite(deps, ctx, resource) ? value : redactConfig(value, path)
}

/** Whether the caller may write `resource`: decided once per request, then applied to every value shown. */
function mayWrite(deps: ApiDeps, ctx: RouteContext, resource: { type: string; id?: string; tenant?: string }): boolean {
  return ctx.subject !== undefined && deps.authorizer.decide(ctx.subject, 'admin.write', resource).allow
}

/** An audit entry as a reader without write access sees it: before/after/diff values redacted (marked, since its hash then no longer matches). */
function readableAudit<E extends { resource: string; before: unknown; after: unknown; diff: Change[] }>(e: E): E & { redacted?: true } {
  const base = e.resource.split('/')
  const before = redactConfig(e.before, base)
  const after = redactConfig(e.after, base)
  const diff = e.diff.map((c) => {
    const path = [...base, ...c.path.split(/[.[\]]+/).filter(Boolean)]
    return { ...c, ...('before' in c ? { before: redactConfig(c.before, path) } : {}), ...('after' in c ? { after: redactConfig(c.after, path) } : {}) }
  })
  const changed = JSON.stringify([before, after, diff]) !== JSON.stringify([e.before, e.after, e.diff])
  return changed ? { ...e, before, after, diff, redacted: true } : e
}

/** The largest page of a list (`limit`): what one response may hold, however long the history. */
const MAX_PAGE = 1000


/** GET /v1/alerts' cursor: the last alert of a page (epoch ms and id), opaque to clients (base64url JSON). */
function alertCursor(a: { at: string; id: string }): string {
  return Buffer.from(JSON.stringify([Date.parse(a.at), a.id])).toString('base64url')
}

function parseAlertCursor(raw: string): { at: number; id: string } {
  let v: unknown
  if (/^[\w-]{1,2800}$/.test(raw)) {
    try {
      v = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'))
    } catch {
      v = undefined
    }
  }
  if (!Array.isArray(v) || v.length !== 2 || !Number.isSafeInteger(v[0]) || (v[0] as number) < 0 || typeof v[1] !== 'string' || hasNul(v[1])) {
    const shown = raw.length > 60 ? `${raw.slice(0, 57)}…` : raw
    throw new HttpError(400, 'invalid cursor', { problems: [`cursor: expected the cursor of a previous page (its next link), got ${JSON.stringify(shown)}`] })
  }
  return { at: v[0] as number, id: v[1] }
}

/** GET /v1/proxies' cursor: the last proxy id of a page, base64url (opaque to clients). */
function parseProxyCursor(raw: string): string {
  const id = /^[\w-]{1,400}$/.test(raw) ? Buffer.from(raw, 'base64url').toString('utf8') : ''
  // Proxy ids are what GET /v1/stream admits: letters, digits, _.:@- and at most 200 characters.
  if (!/^[\w.:@-]{1,200}$/.test(id)) {
    const shown = raw.length > 60 ? `${raw.slice(0, 57)}…` : raw
    throw new HttpError(400, 'invalid cursor', { problems: [`cursor: expected the cursor of a previous page (its next link), got ${JSON.stringify(shown)}`] })
  }
  return id
}

function tenantZone(doc: Doc, tenant: string): string {
  const t = (doc.tenants as Record<string, { timezone?: string }> | undefined)?.[tenant]
  return t?.timezone ?? 'UTC'
}

/** Where item `id` of a collection sits in the document, as problems name paths ("quotas.tenants.acme.budget"). */
function documentPath(c: CollectionSpec, id: string): string {
  return [...c.path, id, ...(c.leaf === undefined ? [] : [c.leaf])].join('.')
}

// Under the Kubernetes readinessProbe's 2 s timeout, so the probe gets an answer, not a timeout.
const READY_TIMEOUT_MS = 1_500

/** The database answers a trivial query within READY_TIMEOUT_MS. */
async function databaseAnswers(db: Db): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), READY_TIMEOUT_MS)
  })
  try {
    return await Promise.race([db.query('SELECT 1').then(() => true, () => false), late])
  } finally {
    clearTimeout(timer)
  }
}

function collectionRoutes(c: CollectionSpec, deps: ApiDeps): RouteDef[] {
  const name = itemSchemaName(c.name)
  const tenantScoped = c.name === 'tenants'
  // Items keyed by tenant belong to that tenant: a tenant-scoped admin may manage its own.
  const byTenant = tenantScoped || ((c.path[0] === 'quotas' || c.path[0] === 'dlp') && c.path[1] === 'tenants')
  const res = (p: Record<string, string>) => (byTenant ? { type: c.name, id: p.id, tenant: p.id } : { type: c.name, id: p.id })
  /** `etag` is the stored value's (`value` may be its redacted view); `uuids` is read once per request when given. */
  const view = async (id: string, value: unknown, etag: string, version: number, uuids?: ReadonlyMap<string, string>) => {
    const v: Record<string, unknown> = { id, etag, version, config: value }
    if (tenantScoped) v.uuid = (uuids ?? (await deps.store.tenantIds())).get(id)
    return v
  }
  const listResource = (subject: Subject) => ({ type: c.name, ...(byTenant && subject.tenant ? { tenant: subject.tenant } : {}) })
  const inUse: Record<number, ReturnType<typeof problem>> = c.referencedBy === undefined ? {} : { 409: problem('still referenced elsewhere in the document (problems name the paths): change or delete those first') }
  return [
    {
      method: 'GET',
      path: `/v1/${c.name}`,
      auth: { action: 'admin.read', resource: (_p, _q, subject) => listResource(subject) },
      doc: { summary: `List ${c.name}`, tags: [c.name], responses: { 200: { description: c.description, schema: ref(`${name}List`) }, ...COMMON } },
      async handle(ctx) {
        const h = requireHead(deps.store)
        let items = listItems(h.document, c)
        if (byTenant && ctx.subject?.tenant) items = items.filter((i) => i.id === ctx.subject!.tenant)
        // The policy's write decision does not differ between the listed items (a tenant-scoped
        // caller sees only its own tenant's): taken once, for the list's resource.
        const full = mayWrite(deps, ctx, listResource(ctx.subject!))
        const uuids = tenantScoped ? await deps.store.tenantIds() : undefined
        sendJson(ctx.res, 200, { version: h.version, items: await Promise.all(items.map((i) => view(i.id, full ? i.value : redactConfig(i.value, [...c.path, i.id]), etagOf(i.value), h.version, uuids))) })
      },
    },
    {
      method: 'GET',
      path: `/v1/${c.name}/{id}`,
      auth: { action: 'admin.read', resource: res },
      doc: { summary: `Get one of ${c.name}`, tags: [c.name], responses: { 200: { description: 'the item; ETag for If-Match', schema: ref(name), etag: true }, ...NOT_MODIFIED, 404: problem('no such item'), ...COMMON } },
      async handle(ctx) {
        const h = requireHead(deps.store)
        const value = getItem(h.document, c, ctx.params.id!)
        if (value === undefined) throw new HttpError(404, `${c.name}/${ctx.params.id} does not exist`)
        const shown = readable(deps, ctx, res(ctx.params), value, [...c.path, ctx.params.id!])
        const etag = etagOf(value)
        sendJson(ctx.res, 200, await view(ctx.params.id!, shown, etag, h.version), { etag })
      },
    },
    {
      method: 'PUT',
      path: `/v1/${c.name}/{id}`,
      auth: { action: 'admin.write', resource: res },
      doc: {
        summary: `Create or replace one of ${c.name}`,
        tags: [c.name],
        ifMatch: true,
        requestBody: ref(`${name}Config`),
        responses: { 200: { description: 'replaced', schema: ref(name), etag: true }, 201: { description: 'created', schema: ref(name), etag: true, location: true }, ...PUT_ERRORS },
      },
      async handle(ctx) {
        const id = ctx.params.id!
        // Assigning map["__proto__"] sets the prototype instead of a key, and the schema would drop
        // such a key anyway: it can be neither stored nor read back, so it is not an id.
        if (id === '__proto__') throw new HttpError(400, `"__proto__" cannot be the id of one of ${c.name}`, { problems: [`${documentPath(c, id)}: "__proto__" is not allowed as a key`] })
        const body = await readJson(ctx.req)
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'expected a JSON object', { problems: [`${c.name}.${ctx.params.id}: expected an object`] })
        // A list item's name is its id in the path: another name in the body was overwritten by the
        // path's without a word, so `PUT /v1/routes/a {"name": "b"}` answered 200 and renamed nothing.
        if (c.shape === 'list') namedAsPath(body as Record<string, unknown>, id, c.name)
        let created = false
        const r = await deps.store.commit({
          actor: actorOf(ctx),
          action: `${c.name}.put`,
          resource: `${c.name}/${id}`,
          change: (head) => {
            const before = getItem(head.document, c, id)
            checkPreconditions(ctx, before)
            created = before === undefined
            const document = putItem(head.document, c, id, body)
            return { document, before, after: getItem(document, c, id), result: getItem(document, c, id) }
          },
        })
        const etag = etagOf(r.result)
        // The ids as the commit saw them: a read after it could fail a change already made.
        sendJson(ctx.res, created ? 201 : 200, await view(id, r.result, etag, r.version, r.tenantIds), { etag, ...createdAt(ctx, created) })
      },
    },
    {
      method: 'DELETE',
      path: `/v1/${c.name}/{id}`,
      auth: { action: 'admin.write', resource: res },
      doc: {
        summary: `Delete one of ${c.name}`,
        tags: [c.name],
        ifMatch: true,
        responses: {
          200: { description: 'deleted', schema: ref('Deleted') },
          404: problem('no such item'),
          ...WRITE_ERRORS,
          ...inUse,
        },
      },
      async handle(ctx) {
        const id = ctx.params.id!
        const r = await deps.store.commit({
          actor: actorOf(ctx),
          action: `${c.name}.delete`,
          resource: `${c.name}/${id}`,
          change: (head) => {
            const before = getItem(head.document, c, id)
            if (before === undefined) throw new NotFound(`${c.name}/${id} does not exist`)
            checkPreconditions(ctx, before)
            // What names it would dangle: a 400 quoting the referrer's path ("routes[0].upstream:
            // expected URL or an upstream name") read as if the route were wrong, and a tenant
            // filter's defaultTenant was not refused at all.
            const refs = c.referencedBy?.(head.document, id) ?? []
            if (refs.length > 0) {
              const what = `${c.noun ?? c.name} ${JSON.stringify(id)}`
              throw new HttpError(409, `${what} is used by ${[...new Set(refs.map((x) => x.resource))].join(', ')}; change or delete those first`, { problems: refs.map((x) => `${x.path}: refers to ${what}`) })
            }
            return { document: putItem(head.document, c, id, undefined), before, after: undefined, result: undefined }
          },
        })
        sendJson(ctx.res, 200, { deleted: id, version: r.version })
      },
    },
  ]
}

function sectionRoutes(s: SectionSpec, deps: ApiDeps): RouteDef[] {
  const name = itemSchemaName(s.name)
  return [
    {
      method: 'GET',
      path: `/v1/${s.name}`,
      auth: { action: 'admin.read', resource: () => ({ type: s.name }) },
      doc: { summary: s.description, tags: [s.name], responses: { 200: { description: 'the section (absent config: not set)', schema: ref(`${name}View`), etag: true }, ...NOT_MODIFIED, ...COMMON } },
      handle(ctx) {
        const h = requireHead(deps.store)
        const value = getAt(h.document, s.path)
        sendJson(ctx.res, 200, { etag: etagOf(value ?? null), version: h.version, ...(value === undefined ? {} : { config: readable(deps, ctx, { type: s.name }, value, s.path) }) }, { etag: etagOf(value ?? null) })
      },
    },
    {
      method: 'PUT',
      path: `/v1/${s.name}`,
      auth: { action: 'admin.write', resource: () => ({ type: s.name }) },
      doc: { summary: `Replace: ${s.description}`, tags: [s.name], ifMatch: true, requestBody: ref(`${name}Section`), responses: { 200: { description: 'replaced', schema: ref(`${name}View`), etag: true }, ...PUT_ERRORS } },
      async handle(ctx) {
        const body = await readJson(ctx.req)
        const r = await deps.store.commit({
          actor: actorOf(ctx),
          action: `${s.name}.put`,
          resource: s.name,
          change: (head) => {
            const before = getAt(head.document, s.path)
            checkPreconditions(ctx, before ?? null, before !== undefined)
            const document = setAt(head.document, s.path, body)
            return { document, before, after: body, result: getAt(document, s.path) }
          },
        })
        sendJson(ctx.res, 200, { etag: etagOf(r.result ?? null), version: r.version, config: r.result }, { etag: etagOf(r.result ?? null) })
      },
    },
  ]
}

/** A route's filter entry (cache settings, DLP preset, persisted policy, quota kind…) by filter name. */
function routeFilterRoutes(deps: ApiDeps): RouteDef[] {
  const routesSpec = COLLECTIONS.find((c) => c.name === 'routes')!
  const find = (doc: Doc, route: string, filter: string) => {
    const r = getItem(doc, routesSpec, route) as { filters?: { name: string }[] } | undefined
    if (r === undefined) throw new NotFound(`routes/${route} does not exist`)
    const filters = r.filters ?? [{ name: 'request-id' }]
    return { route: r, filters, index: filters.findIndex((f) => f.name === filter) }
  }
  const res = (p: Record<string, string>) => ({ type: 'routes', id: p.route })
  return [
    {
      method: 'GET',
      path: '/v1/routes/{route}/filters/{filter}',
      auth: { action: 'admin.read', resource: res },
      doc: { summary: 'One filter’s settings on a route (cache settings, DLP preset, persisted policy, quota kind…)', tags: ['routes'], responses: { 200: { description: 'the filter entry', schema: ref('RouteFilter'), etag: true }, ...NOT_MODIFIED, 404: problem('no such route or filter'), ...COMMON } },
      handle(ctx) {
        const h = requireHead(deps.store)
        const { filters, index } = find(h.document, ctx.params.route!, ctx.params.filter!)
        if (index === -1) throw new HttpError(404, `routes/${ctx.params.route} has no ${ctx.params.filter} filter`)
        const value = filters[index]
        sendJson(ctx.res, 200, { route: ctx.params.route, position: index, etag: etagOf(value), version: h.version, config: readable(deps, ctx, res(ctx.params), value, ['routes', ctx.params.route!, 'filters', index]) }, { etag: etagOf(value) })
      },
    },
    {
      method: 'PUT',
      path: '/v1/routes/{route}/filters/{filter}',
      auth: { action: 'admin.write', resource: res },
      doc: {
        summary: 'Set one filter’s settings on a route (added at the end of the chain when absent)',
        tags: ['routes'],
        ifMatch: true,
        requestBody: ref('FilterEntry'),
        responses: { 200: { description: 'replaced', schema: ref('RouteFilter'), etag: true }, 201: { description: 'added', schema: ref('RouteFilter'), etag: true, location: true }, 404: problem('no such route'), ...PUT_ERRORS },
      },
      async handle(ctx) {
        const body = (await readJson(ctx.req)) as Record<string, unknown>
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'expected a filter entry object')
        const { route: routeName, filter } = ctx.params as { route: string; filter: string }
        // `{"name": "quota", …}` under /filters/cache set the cache filter's settings, not a quota.
        namedAsPath(body, filter, `routes/${routeName}/filters`)
        const r = await deps.store.commit({
          actor: actorOf(ctx),
          action: 'routes.filter.put',
          resource: `routes/${routeName}/filters/${filter}`,
          change: (head) => {
            const { route, filters, index } = find(head.document, routeName, filter)
            const before = index === -1 ? undefined : filters[index]
            checkPreconditions(ctx, before)
            const entry = { ...body, name: filter }
            const next = [...filters]
            if (index === -1) next.push(entry)
            else next[index] = entry
            const document = putItem(head.document, routesSpec, routeName, { ...route, filters: next })
            return { document, before, after: entry, result: { entry, position: index === -1 ? next.length - 1 : index, created: index === -1 } }
          },
        })
        // As a collection's PUT: 201 when it added the filter to the chain.
        sendJson(ctx.res, r.result.created ? 201 : 200, { route: routeName, position: r.result.position, etag: etagOf(r.result.entry), version: r.version, config: r.result.entry }, { etag: etagOf(r.result.entry), ...createdAt(ctx, r.result.created) })
      },
    },
    {
      method: 'DELETE',
      path: '/v1/routes/{route}/filters/{filter}',
      auth: { action: 'admin.write', resource: res },
      doc: { summary: 'Remove a filter from a route’s chain', tags: ['routes'], ifMatch: true, responses: { 200: { description: 'removed', schema: ref('Deleted') }, 404: problem('no such route or filter'), ...WRITE_ERRORS } },
      async handle(ctx) {
        const { route: routeName, filter } = ctx.params as { route: string; filter: string }
        const r = await deps.store.commit({
          actor: actorOf(ctx),
          action: 'routes.filter.delete',
          resource: `routes/${routeName}/filters/${filter}`,
          change: (head) => {
            const { route, filters, index } = find(head.document, routeName, filter)
            if (index === -1) throw new NotFound(`routes/${routeName} has no ${filter} filter`)
            checkPreconditions(ctx, filters[index])
            const next = filters.filter((_f, i) => i !== index)
            return { document: putItem(head.document, routesSpec, routeName, { ...route, filters: next }), before: filters[index], after: undefined, result: undefined }
          },
        })
        sendJson(ctx.res, 200, { deleted: `routes/${routeName}/filters/${filter}`, version: r.version })
      },
    },
  ]
}

/**
 * `Location` of a resource a PUT created (RFC 9110 §15.3.2): the request's own path, as the
 * client sent it (the resource is what it named), without the query.
 */
function createdAt(ctx: RouteContext, created: boolean): { location?: string } {
  return created ? { location: (ctx.req.url ?? '/').split('?')[0]! } : {}
}

/** 404 for a tenant the document does not hold: an empty list of its quotas read as "exists, no quotas". */
export function requireTenant(h: Head, tenant: string): void {
  if (!Object.hasOwn((h.document.tenants as object | undefined) ?? {}, tenant)) throw new HttpError(404, `tenants/${tenant} does not exist`)
}

export async function quotaViews(deps: ApiDeps, tenant?: string) {
  const h = requireHead(deps.store)
  const ids = await deps.store.tenantIds()
  const limits = readQuotaLimits(h.document).filter((q) => tenant === undefined || q.tenant === tenant)
  const used = new Map<string, Map<string, number>>()
  const out = []
  for (const q of limits) {
    let u = used.get(q.tenant)
    if (u === undefined) {
      const kinds = limits.filter((l) => l.tenant === q.tenant).map((l) => l.kind)
      used.set(q.tenant, (u = await deps.usedToday.forTenant(h.document, q.tenant, kinds, tenantZone(h.document, q.tenant))))
    }
    out.push({ tenant: q.tenant, tenantId: ids.get(q.tenant) ?? '', kind: q.kind, limitPerDay: q.limitPerDay, usedToday: u.get(q.kind) ?? 0 })
  }
  return out
}

/**
 * Set one daily quota and the quota as the answer shows it. Today's use is read BEFORE the commit
 * and the tenant's id inside it: the answer was read after the commit, and a database that failed
 * that read (slow, going away) turned a change already made into a 503 "try again" — retried with
 * its If-Match, a 412. Read first, a database that is down fails the write with nothing changed.
 */
export async function setQuotaAndView(deps: ApiDeps, actor: string, tenant: string, kind: QuotaKind, limitPerDay: number, precondition?: (current: unknown) => void) {
  const doc = deps.store.head()?.document ?? {}
  const used = (await deps.usedToday.forTenant(doc, tenant, [kind], tenantZone(doc, tenant))).get(kind) ?? 0
  const r = await setQuota(deps, actor, tenant, kind, limitPerDay, precondition)
  return { ...r, quota: { tenant, tenantId: r.tenantIds.get(tenant) ?? '', kind, limitPerDay, usedToday: used } }
}

/** Set (or with undefined remove) one daily quota as a new config version. */
export async function setQuota(deps: ApiDeps, actor: string, tenant: string, kind: QuotaKind, limitPerDay: number | undefined, precondition?: (current: unknown) => void) {
  return deps.store.commit({
    actor,
    action: limitPerDay === undefined ? 'quotas.delete' : 'quotas.put',
    resource: `tenants/${tenant}/quotas/${kind}`,
    change: (head) => {
      if (!Object.hasOwn((head.document.tenants as object | undefined) ?? {}, tenant)) throw new NotFound(`tenants/${tenant} does not exist`)
      const current = readQuotaLimits(head.document).find((q) => q.tenant === tenant && q.kind === kind)
      const before = current === undefined ? undefined : { limitPerDay: current.limitPerDay }
      precondition?.(before)
      if (limitPerDay === undefined && before === undefined) throw new NotFound(`tenants/${tenant}/quotas/${kind} is not set`)
      const document = writeQuotaLimit(head.document, tenant, kind, limitPerDay)
      const after = limitPerDay === undefined ? undefined : { limitPerDay }
      return { document, before, after, result: { created: before === undefined } }
    },
  })
}

export function buildRoutes(deps: ApiDeps): RouteDef[] {
  const { store, hub, usage, authorizer } = deps
  /** Actors whose acting as another proxy was audited within the last minute. */
  const proxyDeniedAudited = new LRUCache<string, true>({ max: 10_000, ttl: 60_000 })
  /**
   * A token with a `proxy` claim acts as that proxy only: without the check any proxy token could
   * report usage under another proxy's id (counts on its tenants' statements, and a forged high
   * seq that made the real proxy's reports "duplicates"), ACK for it, or take over its stream.
   * A token without the claim is not bound (one token shared by a fleet). The refusal is a
   * security event: audited (once per actor a minute, never at the cost of the 403).
   */
  async function requireOwnProxy(ctx: RouteContext, id: string): Promise<void> {
    const bound = ctx.subject?.proxy
    if (bound === undefined || bound === id) return
    const actor = actorOf(ctx)
    const reason = `proxy.sync as proxy "${id}" denied: the token is bound to proxy "${bound}" (its "proxy" claim)`
    deps.logger.warn({ actor, proxyId: id, boundTo: bound, path: ctx.req.url?.split('?')[0] }, 'a proxy token acted as another proxy: refused')
    if (!proxyDeniedAudited.has(actor)) {
      proxyDeniedAudited.set(actor, true)
      await store
        .audit({ actor, action: 'proxy.sync.denied', resource: `proxies/${id}`, after: { reason, boundTo: bound, request: `${ctx.req.method} ${ctx.req.url?.split('?')[0] ?? ''}` } })
        .catch((err: unknown) => deps.logger.error({ err, actor }, 'could not audit a proxy token acting as another proxy'))
    }
    throw new AuthError(403, reason)
  }
  const routes: RouteDef[] = [
    {
      method: 'GET',
      path: '/healthz',
      doc: { summary: 'Liveness and the head version', tags: ['meta'], responses: { 200: { description: 'up', schema: ref('Health') } } },
      handle(ctx) {
        sendJson(ctx.res, 200, { status: 'ok', version: store.head()?.version ?? 0, proxiesConnected: hub.connected })
      },
    },
    {
      method: 'GET',
      path: '/v1/signing-key',
      doc: { summary: 'The ed25519 public key that signs snapshots, audit entries and statements', tags: ['meta'], responses: { 200: { description: 'public key', schema: ref('SigningKey') } } },
      handle(ctx) {
        sendJson(ctx.res, 200, { keyId: store.key.keyId, algorithm: 'ed25519', publicKeyPem: store.key.publicKeyPem })
      },
    },
    {
      method: 'GET',
      path: '/v1/config',
      auth: { action: 'admin.read', resource: () => ({ type: 'config' }) },
      doc: { summary: 'The head config document', tags: ['config'], responses: { 200: { description: 'head version', schema: ref('ConfigHead'), etag: true }, ...NOT_MODIFIED, ...COMMON } },
      handle(ctx) {
        const h = requireHead(store)
        sendJson(ctx.res, 200, { version: h.version, digest: h.digest, createdAt: new Date(h.createdAt).toISOString(), author: h.author, document: readable(deps, ctx, { type: 'config' }, h.document, []) }, { etag: etagOf(h.document) })
      },
    },
    {
      method: 'GET',
      path: '/readyz',
      doc: {
        summary: 'Readiness: the database answers (SELECT 1 within 1.5 s); /healthz is liveness only',
        tags: ['meta'],
        responses: { 200: { description: 'ready', schema: ref('Ready') }, 503: problem('not ready: the database does not answer') },
      },
      async handle(ctx) {
        if (!(await databaseAnswers(store.db))) throw new HttpError(503, `not ready: the ${store.db.kind} database does not answer`, { headers: { 'retry-after': '5' } })
        sendJson(ctx.res, 200, { status: 'ready', database: store.db.kind, version: store.head()?.version ?? 0 })
      },
    },
    {
      method: 'PUT',
      path: '/v1/config',
      auth: { action: 'admin.write', resource: () => ({ type: 'config' }) },
      doc: { summary: 'Replace the whole document (a new version)', tags: ['config'], ifMatch: true, requestBody: ref('ConfigDocument'), responses: { 200: { description: 'committed (or unchanged)', schema: ref('WriteResult'), etag: true }, ...PUT_ERRORS } },
      async handle(ctx) {
        const body = await readJson(ctx.req)
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'expected a config document (a JSON object)', { problems: ['(root): expected an object'] })
        const r = await store.commit({
          actor: actorOf(ctx),
          action: 'config.put',
          resource: 'config',
          change: (head) => {
            // No config yet: nothing to match, so If-Match is a 412 (RFC 9110 §13.1.1) — it was
            // skipped, and a write conditioned on a document this store never had went through.
            checkPreconditions(ctx, head.version > 0 ? head.document : undefined)
            return { document: body as Doc, before: head.version > 0 ? head.document : undefined, after: body, result: undefined }
          },
        })
        // The document this commit stored (the head may already be another writer's).
        sendJson(ctx.res, 200, { version: r.version, changed: r.changed }, { etag: etagOf(body) })
      },
    },
    {
      method: 'GET',
      path: '/v1/config/versions',
      auth: { action: 'admin.read', resource: () => ({ type: 'config' }) },
      doc: {
        summary: 'Versions, newest first, a page at a time (the next page: `next` in the body, or the Link header)',
        tags: ['config'],
        query: [
          { name: 'limit', description: 'at most this many (default 50)', schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE } },
          { name: 'before', description: 'only versions older than this one (the next page: the last version of this one)', schema: { type: 'integer', minimum: 1 } },
        ],
        responses: { 200: { description: 'versions', schema: ref('VersionList'), link: true }, 400: problem('limit is not an integer from 1 to 1000, or before not a positive integer'), ...COMMON },
      },
      async handle(ctx) {
        const limit = integerQuery(ctx.query, 'limit', 50, { min: 1, max: MAX_PAGE })
        const rawBefore = ctx.query.get('before')
        const before = rawBefore === null ? undefined : integerParam('before', rawBefore, { min: 1 })
        // One more than the page: whether there is a next page, without a link to an empty one.
        const rows = await store.versions(limit + 1, before)
        const items = rows.slice(0, limit).map((v) => ({ ...v, createdAt: new Date(v.createdAt).toISOString() }))
        const page = rows.length > limit ? pageLinks('/v1/config/versions', { limit: String(limit), before: String(items.at(-1)!.version) }) : undefined
        sendJson(ctx.res, 200, { items, ...(page ? { next: page.next } : {}) }, page?.headers)
      },
    },
    {
      method: 'GET',
      path: '/v1/config/versions/{version}',
      auth: { action: 'admin.read', resource: () => ({ type: 'config' }) },
      doc: { summary: 'One version of the document', tags: ['config'], responses: { 200: { description: 'that version; its ETag is the document’s, as GET /v1/config gives it', schema: ref('ConfigHead'), etag: true }, ...NOT_MODIFIED, 400: problem('version is not a non-negative integer'), 404: problem('no such version'), ...COMMON } },
      async handle(ctx) {
        const h = await store.version(integerParam('version', ctx.params.version))
        if (h === undefined) throw new HttpError(404, `version ${ctx.params.version} does not exist`)
        sendJson(ctx.res, 200, { version: h.version, digest: h.digest, createdAt: new Date(h.createdAt).toISOString(), author: h.author, document: readable(deps, ctx, { type: 'config' }, h.document, []) }, { etag: etagOf(h.document) })
      },
    },
    {
      method: 'POST',
      path: '/v1/config/rollback',
      auth: { action: 'admin.write', resource: () => ({ type: 'config' }) },
      doc: {
        summary: 'Commit an earlier version’s document as a new version (If-Match: the head document’s ETag)',
        tags: ['config'],
        ifMatch: true,
        requestBody: { type: 'object', required: ['version'], additionalProperties: false, properties: { version: { type: 'integer', minimum: 1 } } },
        responses: { 200: { description: 'committed', schema: ref('WriteResult'), etag: true }, 404: problem('no such version'), ...PUT_ERRORS },
      },
      async handle(ctx) {
        const body = await readJson(ctx.req)
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'expected {"version": <integer>}', { problems: ['(root): expected an object'] })
        // The body is {"version"} alone: anything else was ignored, so `{"version": 2, "ifMatch": …}`
        // rolled back over whatever the head had become (the precondition goes in If-Match).
        const extra = Object.keys(body).filter((k) => k !== 'version')
        if (extra.length > 0) throw new HttpError(400, 'invalid rollback', { problems: [`(body): unknown ${extra.length === 1 ? 'key' : 'keys'} ${namedKeys(extra)}: a rollback takes only version (the head document's ETag goes in the If-Match header)`] })
        const version = integerParam('version', (body as { version?: unknown }).version, { min: 1, json: true })
        const old = await store.version(version)
        if (old === undefined) throw new HttpError(404, `version ${version} does not exist`)
        const r = await store.commit({
          actor: actorOf(ctx),
          action: 'config.rollback',
          resource: 'config',
          change: (head) => {
            // Like PUT /v1/config: a rollback decided on a head that has moved since must not
            // silently undo the change made meanwhile.
            checkPreconditions(ctx, head.document)
            // The entry says which version came back, and over which: before/after alone are two
            // documents, and the version restored was named nowhere.
            return { document: old.document, before: head.document, after: old.document, result: undefined, detail: { restoredVersion: version, replacedVersion: head.version } }
          },
        })
        sendJson(ctx.res, 200, { version: r.version, changed: r.changed }, { etag: etagOf(old.document) })
      },
    },
    ...COLLECTIONS.flatMap((c) => collectionRoutes(c, deps)),
    ...SECTIONS.flatMap((s) => sectionRoutes(s, deps)),
    ...routeFilterRoutes(deps),
    {
      method: 'GET',
      path: '/v1/quotas',
      auth: { action: 'admin.read', resource: (_p, _q, subject) => ({ type: 'quotas', ...(subject.tenant ? { tenant: subject.tenant } : {}) }) },
      doc: { summary: 'Every daily quota with today’s use', tags: ['quotas'], responses: { 200: { description: 'quotas', schema: ref('QuotaList') }, ...COMMON } },
      async handle(ctx) {
        sendJson(ctx.res, 200, { items: await quotaViews(deps, ctx.subject?.tenant) })
      },
    },
    {
      method: 'GET',
      path: '/v1/tenants/{id}/quotas',
      auth: { action: 'admin.read', resource: (p) => ({ type: 'quotas', tenant: p.id }) },
      doc: { summary: 'A tenant’s daily quotas with today’s use', tags: ['quotas'], responses: { 200: { description: 'quotas', schema: ref('QuotaList') }, 404: problem('no such tenant'), ...COMMON } },
      async handle(ctx) {
        requireTenant(requireHead(deps.store), ctx.params.id!)
        sendJson(ctx.res, 200, { items: await quotaViews(deps, ctx.params.id) })
      },
    },
    {
      method: 'GET',
      path: '/v1/tenants/{id}/quotas/{kind}',
      auth: { action: 'admin.read', resource: (p) => ({ type: 'quotas', id: p.kind, tenant: p.id }) },
      doc: { summary: 'One daily quota with today’s use; its ETag is what PUT/DELETE take as If-Match', tags: ['quotas'], responses: { 200: { description: 'the quota (never 304: its ETag is the limit’s, while usedToday moves)', schema: ref('Quota'), etag: true }, 404: problem('no such tenant, or no such quota set'), ...COMMON } },
      async handle(ctx) {
        const kind = ctx.params.kind!
        if (!isQuotaKind(kind)) throw new HttpError(404, `unknown quota kind "${kind}" (graphql, ingest, embeddings, subscriptions)`)
        const h = requireHead(deps.store)
        requireTenant(h, ctx.params.id!)
        const q = (await quotaViews(deps, ctx.params.id)).find((x) => x.kind === kind)
        if (q === undefined) throw new HttpError(404, `tenants/${ctx.params.id}/quotas/${kind} is not set`)
        // The ETag is the limit's (what If-Match takes): a poller's If-None-Match was answered 304
        // while usedToday had moved, and a usage dashboard froze at its first reading.
        sendJson(ctx.res, 200, q, { etag: etagOf({ limitPerDay: q.limitPerDay }) }, { conditional: false })
      },
    },
    {
      method: 'PUT',
      path: '/v1/tenants/{id}/quotas/{kind}',
      auth: { action: 'admin.write', resource: (p) => ({ type: 'quotas', id: p.kind, tenant: p.id }) },
      doc: { summary: 'Set a daily quota (kind: graphql, ingest, embeddings, subscriptions)', tags: ['quotas'], ifMatch: true, requestBody: ref('QuotaInput'), responses: { 200: { description: 'replaced', schema: ref('Quota'), etag: true }, 201: { description: 'created', schema: ref('Quota'), etag: true, location: true }, 404: problem('no such tenant'), ...PUT_ERRORS } },
      async handle(ctx) {
        const kind = ctx.params.kind!
        if (!isQuotaKind(kind)) throw new HttpError(400, `unknown quota kind "${kind}"`, { problems: [`kind: expected one of graphql | ingest | embeddings | subscriptions, got "${kind}"`] })
        const body = (await readJson(ctx.req)) as { limitPerDay?: unknown }
        // QuotaInput allows nothing else: `{"limitPerDay": 5, "rate": 10}` was a 200 that dropped
        // the rate without a word (the tenant's whole entry is PUT /v1/quota-limits/{id}).
        const unknown = body !== null && typeof body === 'object' && !Array.isArray(body) ? Object.keys(body).filter((k) => k !== 'limitPerDay') : []
        if (unknown.length > 0) throw new HttpError(400, 'invalid quota', { problems: [`(body): unknown ${unknown.length === 1 ? 'key' : 'keys'} ${namedKeys(unknown)}: a quota takes only limitPerDay (rate, burst and the rest: PUT /v1/quota-limits/{id})`] })
        if (!Number.isInteger(body?.limitPerDay) || (body.limitPerDay as number) < 0) throw new HttpError(400, 'invalid quota', { problems: [`limitPerDay: expected a non-negative integer, got ${JSON.stringify(body?.limitPerDay)}`] })
        const { quota: q, ...r } = await setQuotaAndView(deps, actorOf(ctx), ctx.params.id!, kind, body.limitPerDay as number, (cur) => checkPreconditions(ctx, cur))
        // As a collection's PUT: 201 when the quota was not set before.
        sendJson(ctx.res, r.result.created ? 201 : 200, q, { etag: etagOf({ limitPerDay: q.limitPerDay }), ...createdAt(ctx, r.result.created) })
      },
    },
    {
      method: 'DELETE',
      path: '/v1/tenants/{id}/quotas/{kind}',
      auth: { action: 'admin.write', resource: (p) => ({ type: 'quotas', id: p.kind, tenant: p.id }) },
      doc: { summary: 'Remove a daily quota', tags: ['quotas'], ifMatch: true, responses: { 200: { description: 'removed', schema: ref('Deleted') }, 404: problem('not set'), ...WRITE_ERRORS } },
      async handle(ctx) {
        const kind = ctx.params.kind!
        if (!isQuotaKind(kind)) throw new HttpError(404, `unknown quota kind "${kind}"`)
        const r = await setQuota(deps, actorOf(ctx), ctx.params.id!, kind, undefined, (cur) => checkPreconditions(ctx, cur))
        sendJson(ctx.res, 200, { deleted: `tenants/${ctx.params.id}/quotas/${kind}`, version: r.version })
      },
    },
    {
      method: 'GET',
      path: '/v1/tenants/{id}/statement',
      auth: { action: 'admin.read', resource: (p) => ({ type: 'statements', tenant: p.id }) },
      doc: {
        summary: 'Per-day usage totals (days in the tenant’s time zone), signed',
        tags: ['usage'],
        query: [
          { name: 'from', description: 'first day, YYYY-MM-DD (default: 30 days before `to`)', schema: { type: 'string', format: 'date' } },
          { name: 'to', description: 'last day, YYYY-MM-DD (default: today)', schema: { type: 'string', format: 'date' } },
        ],
        responses: { 200: { description: 'statement', schema: ref('Statement') }, 400: problem('bad dates'), 404: problem('no such tenant'), ...COMMON },
      },
      async handle(ctx) {
        const h = requireHead(store)
        const tenant = ctx.params.id!
        const ids = await store.tenantIds()
        if (!Object.hasOwn((h.document.tenants as object | undefined) ?? {}, tenant) && !ids.has(tenant)) throw new HttpError(404, `tenants/${tenant} does not exist`)
        const tz = tenantZone(h.document, tenant)
        const today = localDay(new Date(), tz)
        const to = ctx.query.get('to') ?? today
        // 30 days before `to`: counted back from today, `?to=` a past month-end alone was a 400
        // blaming a `from` the caller never sent ("from: … is after to: …").
        const from = ctx.query.get('from') ?? (isCalendarDate(to) ? daysBefore(to, 30) : today)
        const problems = [['from', from], ['to', to]].filter(([, v]) => !isCalendarDate(v!)).map(([k, v]) => `${k}: expected a date YYYY-MM-DD, got "${v}"`)
        if (problems.length) throw new HttpError(400, 'invalid date range', { problems })
        if (from > to) throw new HttpError(400, 'invalid date range', { problems: [`from: ${from} is after to: ${to}`] })
        sendJson(ctx.res, 200, await usage.statement(tenant, ids.get(tenant), tz, from, to))
      },
    },
    {
      method: 'GET',
      path: '/v1/alerts',
      auth: {
        action: 'admin.read',
        resource: (_p, q, subject) => {
          const tenant = alertsTenant(q, subject)
          return { type: 'alerts', ...(tenant === undefined ? {} : { tenant }) }
        },
      },
      doc: {
        summary: 'Budget (80%/100%) and anomaly alerts, newest first, a page at a time (the next page: `next` in the body, or the Link header)',
        tags: ['usage'],
        query: [
          { name: 'tenant', description: 'only this tenant', schema: { type: 'string' } },
          { name: 'since', description: 'only alerts at or after this time (RFC 3339, e.g. 2026-11-26T05:00:00Z); anything else: 400', schema: { type: 'string', format: 'date-time' } },
          { name: 'limit', description: 'at most this many (default 100)', schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE } },
          { name: 'cursor', description: 'where the next page starts: the cursor in the previous page’s `next` (opaque)', schema: { type: 'string' } },
        ],
        responses: { 200: { description: 'alerts', schema: ref('AlertList'), link: true }, 400: problem('since is not a date-time, limit not an integer from 1 to 1000, or cursor not one this API gave'), ...COMMON },
      },
      async handle(ctx) {
        const since = dateTimeQuery(ctx.query, 'since') ?? 0
        const limit = integerQuery(ctx.query, 'limit', 100, { min: 1, max: MAX_PAGE })
        const rawCursor = ctx.query.get('cursor')
        const after = rawCursor === null ? undefined : parseAlertCursor(rawCursor)
        // The tenant the policy decided on, never another reading of the query.
        const tenant = alertsTenant(ctx.query, ctx.subject!)
        const rows = await usage.alerts({ since, limit: limit + 1, ...(tenant === undefined ? {} : { tenant }), ...(after === undefined ? {} : { after }) })
        const items = rows.slice(0, limit)
        const page = rows.length > limit ? pageLinks('/v1/alerts', { tenant, since: ctx.query.get('since') ?? undefined, limit: String(limit), cursor: alertCursor(items.at(-1)!) }) : undefined
        sendJson(ctx.res, 200, { items, ...(page ? { next: page.next } : {}) }, page?.headers)
      },
    },
    {
      method: 'GET',
      path: '/v1/audit',
      auth: { action: 'admin.read', resource: () => ({ type: 'audit' }) },
      doc: {
        summary: 'Audit entries in order, a page at a time (the next page: `next` in the body, or the Link header; or ?after=<the last seq>). A page holds at most 32 MiB of entry text (before, after, diff; at least one entry): it may hold fewer than `limit` and still have a next page',
        tags: ['audit'],
        query: [
          { name: 'after', description: 'entries after this seq', schema: { type: 'integer', minimum: 0 } },
          { name: 'limit', description: 'at most this many (default 100)', schema: { type: 'integer', minimum: 1, maximum: 1000 } },
          { name: 'resource', description: 'only this resource, e.g. tenants/acme', schema: { type: 'string' } },
        ],
        responses: { 200: { description: 'entries', schema: ref('AuditList'), link: true }, 400: problem('after or limit is not an integer in range'), ...COMMON },
      },
      async handle(ctx) {
        const afterSeq = integerQuery(ctx.query, 'after', 0)
        const limit = integerQuery(ctx.query, 'limit', 100, { min: 1, max: MAX_PAGE })
        const resource = ctx.query.get('resource') || undefined
        // One more than the page, as the other lists: a full page said nothing of whether the log
        // went on, and a reader stopping at the first short-looking page missed the rest.
        // A page also ends before `limit` when its entries hold AUDIT_LIST_PAGE_BYTES (audit.ts: whole
        // documents, twice each): then too it links the next one.
        const { entries: rows, cut } = await listAudit(store.db, { afterSeq, limit: limit + 1, ...(resource === undefined ? {} : { resource }) })
        const items = rows.slice(0, limit)
        const page = rows.length > limit || cut ? pageLinks('/v1/audit', { after: String(items.at(-1)!.seq), limit: String(limit), resource }) : undefined
        const full = ctx.subject !== undefined && authorizer.decide(ctx.subject, 'admin.write', { type: 'config' }).allow
        sendJson(ctx.res, 200, { items: items.map((e) => ({ ...(full ? e : readableAudit(e)), at: new Date(e.at).toISOString() })), ...(page ? { next: page.next } : {}) }, page?.headers)
      },
    },
    {
      method: 'GET',
      path: '/v1/audit/verify',
      auth: { action: 'admin.read', resource: () => ({ type: 'audit' }) },
      doc: { summary: 'Verify the hash chain and signatures (like `igw audit verify`)', tags: ['audit'], responses: { 200: { description: 'result', schema: ref('AuditVerify') }, ...COMMON } },
      async handle(ctx) {
        sendJson(ctx.res, 200, await verifyAudit(store.db, deps.auditKeys ?? store.key.publicKey))
      },
    },
    {
      method: 'GET',
      path: '/v1/proxies',
      auth: { action: 'admin.read', resource: () => ({ type: 'proxies' }) },
      doc: {
        summary: 'Every proxy seen, by id, a page at a time (the next page: `next` in the body, or the Link header): connection, applied version, its NACK until it ACKs that version or a later one (a CSDS-like view)',
        tags: ['push'],
        query: [
          { name: 'limit', description: `at most this many (default ${MAX_PAGE})`, schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE } },
          { name: 'cursor', description: 'where the next page starts: the cursor in the previous page’s `next` (opaque)', schema: { type: 'string' } },
        ],
        responses: { 200: { description: 'proxies', schema: ref('ProxyList'), link: true }, 400: problem('limit is not an integer from 1 to 1000, or cursor not one this API gave'), ...COMMON },
      },
      async handle(ctx) {
        // The default page is the largest: a fleet that fitted in one answer still does.
        const limit = integerQuery(ctx.query, 'limit', MAX_PAGE, { min: 1, max: MAX_PAGE })
        const rawCursor = ctx.query.get('cursor')
        const after = rawCursor === null ? undefined : parseProxyCursor(rawCursor)
        // Ordered by code unit in SQL (PushHub.list: COLLATE "C" on PostgreSQL, whose locale
        // orders "a-b" and "a_b" its own way): the cursor compares with the order it pages by.
        const rest = await hub.list({ ...(after === undefined ? {} : { after }), limit: limit + 1 })
        const items = rest.slice(0, limit)
        const page = rest.length > limit ? pageLinks('/v1/proxies', { limit: String(limit), cursor: Buffer.from(items.at(-1)!.id).toString('base64url') }) : undefined
        sendJson(ctx.res, 200, { headVersion: store.head()?.version ?? 0, items, ...(page ? { next: page.next } : {}) }, page?.headers)
      },
    },
    {
      method: 'GET',
      path: '/v1/stream',
      auth: { action: 'proxy.sync', resource: () => ({ type: 'stream' }) },
      doc: {
        summary: 'Server-Sent Events: `snapshot` events carry signed config snapshots (proxy.sync)',
        tags: ['push'],
        query: [
          { name: 'proxy', description: 'the proxy’s id', schema: { type: 'string' }, required: true },
          { name: 'version', description: 'version the proxy runs (0: none)', schema: { type: 'integer', minimum: 0 } },
          { name: 'digest', description: 'sha256 of the document the proxy runs (the snapshot’s `digest`): a store whose version `version` holds another document sends its snapshot (older proxies omit it)', schema: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
          { name: 'key', description: 'id of the signing key the proxy is pinned to, sent when the snapshot it runs is signed by a replaced key: a head of the same version and document signed with that key is sent (the proxy keeps it as last-known-good) instead of `current`', schema: { type: 'string', pattern: '^[0-9a-f]{16}$' } },
          { name: 'boot', description: 'the proxy process’s boot id', schema: { type: 'string', maxLength: MAX_BOOT_ID_LENGTH } },
          { name: 'hostname', description: 'for GET /v1/proxies', schema: { type: 'string', maxLength: 255 } },
        ],
        responses: {
          200: { description: 'event stream; it ends when the token expires (reconnect with a current one)', contentType: 'text/event-stream', schema: { type: 'string' } },
          400: problem('no proxy id, version is not a non-negative integer, or boot or hostname too long'),
          ...COMMON,
          ...PROXY_FORBIDDEN,
        },
      },
      async handle(ctx) {
        // Everything is checked before the first byte: after the 200 the only way to report an
        // error is to break the stream.
        const id = ctx.query.get('proxy')
        if (!id || !/^[\w.:@-]{1,200}$/.test(id)) throw new HttpError(400, 'expected ?proxy=<id> (letters, digits, _.:@-)')
        const version = integerQuery(ctx.query, 'version', 0)
        const digest = digestParam('digest', ctx.query.get('digest'))
        // A key id or nothing: anything else is ignored (older proxies never send it).
        const key = ctx.query.get('key')
        const pinnedKey = key !== null && /^[0-9a-f]{16}$/.test(key) ? key : undefined
        // Both are stored in the proxy's row, bounded as every other stored text is (boot_id also
        // holds usage reports' boot ids, capped at the same length there).
        const text = (name: string, max: number): string | undefined => {
          const raw = ctx.query.get(name)
          if (raw !== null && raw.length > max) throw new HttpError(400, `invalid ${name}`, { problems: [`${name}: expected at most ${max} characters, got ${raw.length}`] })
          return raw ?? undefined
        }
        const boot = text('boot', MAX_BOOT_ID_LENGTH)
        const hostname = text('hostname', 255)
        await requireOwnProxy(ctx, id)
        if (ctx.req.method === 'HEAD') {
          ctx.res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', ...(bodyUnread(ctx.req) ? { connection: 'close' } : {}) }).end()
          return
        }
        // Authorized once, here: the stream ends when its token would no longer be accepted (its
        // `exp` plus the 30 s clock tolerance the Authenticator allows), so a token that expired,
        // or was retired by not renewing it, stops getting config; the proxy reconnects with the
        // token it holds then. The token was verified before this handler ran.
        const exp = decodeJwt(ctx.req.headers.authorization!.replace(/^bearer\s+/i, '').trim()).exp
        await hub.open(ctx.res, id, hostname, boot, version, () => store.head(), digest, exp === undefined ? undefined : (exp + CLOCK_TOLERANCE_S) * 1000, pinnedKey)
      },
    },
    {
      method: 'POST',
      path: '/v1/proxies/{id}/ack',
      auth: { action: 'proxy.sync', resource: (p) => ({ type: 'proxies', id: p.id }) },
      doc: { summary: 'ACK or NACK a pushed version', tags: ['push'], requestBody: ref('Ack'), responses: { 204: { description: 'recorded' }, 400: problem('bad body'), 404: problem('unknown proxy'), ...COMMON, ...PROXY_FORBIDDEN } },
      async handle(ctx) {
        await requireOwnProxy(ctx, ctx.params.id!)
        const b = (await readJson(ctx.req)) as { version?: unknown; status?: unknown; error?: unknown; digest?: unknown }
        if (b === null || typeof b !== 'object' || (b.status !== 'ACK' && b.status !== 'NACK')) throw new HttpError(400, 'expected {version, status: ACK|NACK, error?, digest?}')
        const version = integerParam('version', b.version, { json: true })
        const digest = b.digest === undefined || b.digest === null ? undefined : digestParam('digest', b.digest)
        const known = await hub.ack(ctx.params.id!, version, b.status === 'ACK', typeof b.error === 'string' ? b.error : undefined, digest)
        if (!known) throw new HttpError(404, `proxy ${ctx.params.id} has not connected`)
        ctx.res.writeHead(204).end()
      },
    },
    {
      method: 'POST',
      path: '/v1/usage',
      auth: { action: 'proxy.sync', resource: () => ({ type: 'usage' }) },
      doc: { summary: 'A proxy’s per-tenant counters for one interval (deltas; duplicates ignored)', tags: ['usage'], requestBody: ref('UsageReport'), responses: { 200: { description: 'counted', schema: ref('UsageAccepted') }, 400: problem('bad report'), ...COMMON, ...PROXY_FORBIDDEN } },
      async handle(ctx) {
        let r = validateReport(await readJson(ctx.req))
        if (typeof r === 'string') throw new HttpError(400, 'invalid usage report', { problems: [r] })
        await requireOwnProxy(ctx, r.proxyId)
        // The proxy's clock decides the day its counts land on — within reason. Far ahead, or
        // further behind than any outage a proxy's pending reports outlive, is a clock problem:
        // those counts land on today by this clock (with a warning) instead of on days that no
        // statement asks for ("10000-01-01") or that were closed long ago.
        const now = Date.now()
        const skewMs = Date.parse(r.at) - now
        if (skewMs > MAX_USAGE_AHEAD_MS || skewMs < -MAX_USAGE_BEHIND_MS) {
          deps.logger.warn({ proxyId: r.proxyId, at: r.at, skewMs }, 'usage report time is far from the control plane clock: counted at receipt')
          r = { ...r, at: new Date(now).toISOString() }
        }
        const doc = store.head()?.document ?? {}
        // The limits the quota filter enforces: a tenant's own, or quotas.defaults (tenants on
        // the default daily limit raised no budget alerts).
        const out = await usage.ingest(r, (t) => tenantZone(doc, t), dailyLimits(doc))
        if (out.saturated.length > 0) {
          // Accepted all the same: the counter stays at its maximum (no real traffic gets there;
          // a proxy token sending huge counts does), so the proxy is named here.
          deps.metrics.usageSaturations.inc(out.saturated.length)
          deps.logger.warn(
            { proxyId: r.proxyId, seq: r.seq, limit: USAGE_COUNTER_MAX, saturatedCounters: out.saturated.length, counters: out.saturated.slice(0, 10) },
            'usage counters at their maximum: counts beyond it are not recorded',
          )
        }
        sendJson(ctx.res, 200, { accepted: out.accepted, alerts: out.alerts.length })
      },
    },
    {
      method: 'GET',
      path: '/v1/policies',
      auth: { action: 'admin.read', resource: () => ({ type: 'policies' }) },
      doc: { summary: 'The OPA bundles in force (Rego compiled to wasm), with digests', tags: ['policies'], responses: { 200: { description: 'bundles', schema: ref('PolicyList') }, ...COMMON } },
      handle(ctx) {
        const items = POLICY_BUNDLES.map((b) => {
          const bytes = readFileSync(bundlePath(b.name))
          return { name: b.name, entrypoints: b.entrypoints, sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length }
        })
        sendJson(ctx.res, 200, { items })
      },
    },
    {
      method: 'POST',
      path: '/v1/policies/admin/decide',
      auth: { action: 'admin.read', resource: () => ({ type: 'policies', id: 'admin' }) },
      doc: { summary: 'Dry-run the admin policy for a subject, action and resource', tags: ['policies'], requestBody: ref('DecideInput'), responses: { 200: { description: 'decision', schema: ref('Decision') }, 400: problem('not a decision request (subject, action, resource)'), ...COMMON } },
      async handle(ctx) {
        const b = (await readJson(ctx.req)) as { subject?: unknown; action?: unknown; resource?: unknown; context?: unknown }
        // What DecideInput requires: `{}` or `null` was answered 200 "unknown action "undefined"",
        // a dry run of nothing that read as the policy's verdict.
        const isObj = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v)
        const problems: string[] = []
        if (!isObj(b)) problems.push('(body): expected an object {subject, action, resource, context?}')
        else {
          if (!isObj(b.subject)) problems.push('subject: expected an object (the caller as the policy sees it)')
          if (typeof b.action !== 'string' || b.action === '') problems.push('action: expected a non-empty string (e.g. "admin.write")')
          if (!isObj(b.resource)) problems.push('resource: expected an object (e.g. {"type": "config"})')
          if (b.context !== undefined && !isObj(b.context)) problems.push('context: expected an object')
        }
        if (problems.length > 0) throw new HttpError(400, 'invalid decision request', { problems })
        sendJson(ctx.res, 200, authorizer.decide(b.subject as never, b.action as string, b.resource as never, (b.context ?? {}) as Record<string, unknown>))
      },
    },
    {
      method: 'POST',
      path: '/v1/dlp/detokenize',
      auth: { action: 'dlp.detokenize', resource: (_p) => ({ type: 'dlp' }) },
      doc: {
        summary: 'Turn DLP tokens back into values (dlp.detokenize, justification required, audited)',
        tags: ['dlp'],
        requestBody: ref('DetokenizeInput'),
        responses: { 200: { description: 'values (null: see errors)', schema: ref('DetokenizeResult') }, 400: problem('bad body'), 501: problem('no tokenizer in this build'), ...COMMON, 503: problem('the DLP keyring cannot be read, or the database is unavailable') },
      },
      async handle(ctx) {
        const b = (await readJson(ctx.req)) as { tokens?: unknown }
        if (!Array.isArray(b?.tokens) || b.tokens.some((t) => typeof t !== 'string') || b.tokens.length > 1000) throw new HttpError(400, 'expected {tokens: string[] (at most 1000)}')
        // Every token is written to the audit log (twice when it fails): a 4 MiB body of one
        // junk "token" would put ~8 MiB in an entry. No token the tokenizer makes is this long.
        const long = (b.tokens as string[]).findIndex((t) => t.length > MAX_TOKEN_CHARS)
        if (long !== -1) throw new HttpError(400, `tokens[${long}]: longer than ${MAX_TOKEN_CHARS} characters, not a DLP token`)
        if (deps.detokenizer === undefined) throw new HttpError(501, 'no DLP tokenizer is available in this build', { logLevel: 'warn' })
        let out
        try {
          out = await deps.detokenizer.detokenize(b.tokens as string[], store.head()?.document ?? {})
        } catch (err) {
          throw new HttpError(503, `DLP keyring unavailable: ${(err as Error).message}`)
        }
        // The audit entry records who asked, why and which tokens — never the revealed values.
        await store.audit({
          actor: actorOf(ctx),
          action: 'dlp.detokenize',
          resource: 'dlp/tokens',
          after: { tokens: b.tokens, justification: ctx.req.headers['x-justification'] ?? null, revealed: Object.values(out.values).filter((v) => v !== null).length, errors: out.errors },
        })
        sendJson(ctx.res, 200, out)
      },
    },
    ...pluginRoutes(deps),
  ]
  return routes
}
