// JSON Schemas of the API's own bodies (the config parts come from the zod schema itself).
import { z } from 'zod'
import { filterEntry } from '../config/filters/index.ts'
import { isSecretPath } from '../config/redact.ts'
import { gatewayConfigObject } from '../config/schema.ts'
import type { JsonSchema } from './http-kit.ts'
import { MAX_ARTIFACT_BYTES, NAME_PATTERN, REJECTION_REASONS } from './plugin-package.ts'
import { COLLECTIONS, SECTIONS } from './resources.ts'

function fromZod(schema: z.ZodType): JsonSchema {
  const s = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema
  delete s.$schema
  dropUnknownFormats(s)
  return s
}

/** The formats JSON Schema 2020-12 defines (its format-annotation vocabulary). */
const STANDARD_FORMATS = new Set(['date-time', 'date', 'time', 'duration', 'email', 'idn-email', 'hostname', 'idn-hostname', 'ipv4', 'ipv6', 'uri', 'uri-reference', 'iri', 'iri-reference', 'uuid', 'uri-template', 'json-pointer', 'relative-json-pointer', 'regex'])

/**
 * zod writes some string checks as formats of its own (`.startsWith('/')` is `format:
 * "starts_with"` beside the `pattern` that says the same): a validator in its default strict mode
 * (ajv) refuses to compile a schema with a format it does not know, so a client could not use
 * the config schemas at all. The pattern stays; the made-up format goes.
 */
function dropUnknownFormats(v: unknown, isMap = false): void {
  if (v === null || typeof v !== 'object') return
  if (Array.isArray(v)) {
    for (const x of v) dropUnknownFormats(x)
    return
  }
  const o = v as Record<string, unknown>
  // A map of names to schemas (`properties`): every value is a schema, whatever its name.
  if (isMap) {
    for (const x of Object.values(o)) dropUnknownFormats(x)
    return
  }
  if (typeof o.format === 'string' && !STANDARD_FORMATS.has(o.format)) delete o.format
  for (const [k, x] of Object.entries(o)) {
    // Values, not schemas: a default such as `{format: "json"}` is the document's, kept as it is.
    if (k === 'default' || k === 'const' || k === 'enum' || k === 'examples') continue
    dropUnknownFormats(x, k === 'properties' || k === 'patternProperties' || k === '$defs' || k === 'dependentSchemas')
  }
}

/** What config/redact.ts shows in place of a secret (and of a URL's credentials or secret query values). */
const REDACTED = '[redacted]'
const REDACTED_SECRET: JsonSchema = { const: REDACTED, description: 'a secret, shown only to a caller the admin policy lets write it' }
const REDACTED_URL: JsonSchema = { type: 'string', pattern: '\\[redacted\\]', description: 'a URL whose credentials or secret query values are shown as [redacted] to a caller who may not write it' }

/**
 * The schema of a config part as a response shows it: a reader who may not write it gets every
 * secret as "[redacted]" and URLs with their credentials replaced (api.ts, config/redact.ts). The
 * input schema refuses those values (a JWT secret of 32+ characters, a URI), so a viewer's
 * GET /v1/config did not validate against the published schema. `path` is where the schema sits
 * in the document; map entries are `*`, list items 0, as isSecretPath reads them.
 */
function shownSchema(schema: unknown, path: readonly PropertyKey[]): unknown {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return schema
  const o = schema as JsonSchema
  const out: JsonSchema = {}
  for (const [k, v] of Object.entries(o)) {
    if (k === 'properties' || k === 'patternProperties') {
      const named: Record<string, unknown> = {}
      for (const [name, sub] of Object.entries(v as Record<string, unknown>)) named[name] = shownSchema(sub, [...path, k === 'properties' ? name : '*'])
      out[k] = named
    } else if (k === 'additionalProperties') out[k] = shownSchema(v, [...path, '*'])
    else if (k === 'items') out[k] = shownSchema(v, [...path, 0])
    else if (k === 'prefixItems') out[k] = (v as unknown[]).map((sub, i) => shownSchema(sub, [...path, i]))
    else if (k === 'anyOf' || k === 'oneOf' || k === 'allOf') out[k] = (v as unknown[]).map((sub) => shownSchema(sub, path))
    else out[k] = v
  }
  const types = Array.isArray(o.type) ? (o.type as unknown[]) : [o.type]
  const mayBeString = o.type === undefined || types.includes('string')
  // Only a schema that itself takes strings (the branches of an anyOf are each wrapped on their own).
  if (!mayBeString || o.anyOf !== undefined || o.oneOf !== undefined || (o.type === undefined && o.properties !== undefined)) return out
  if (path.length > 0 && isSecretPath(path)) return { anyOf: [out, REDACTED_SECRET] }
  if (o.format === 'uri' || o.format === 'uri-reference') return { anyOf: [out, REDACTED_URL] }
  return out
}

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` })
const str = { type: 'string' }
const int = { type: 'integer' }
const isoTime = { type: 'string', format: 'date-time' }
const counts = { type: 'object', additionalProperties: { type: 'number' } }

export function componentSchemas(): Record<string, JsonSchema> {
  const out: Record<string, JsonSchema> = {
    ConfigDocument: fromZod(gatewayConfigObject),
    FilterEntry: filterEntryInput(fromZod(filterEntry)),
    RouteFilter: { type: 'object', required: ['route', 'position', 'etag', 'version', 'config'], additionalProperties: false, properties: { route: str, position: int, etag: str, version: int, config: ref('FilterEntry') } },
    Problem: {
      type: 'object',
      required: ['title', 'status', 'detail'],
      properties: {
        type: str,
        title: str,
        status: int,
        detail: str,
        problems: { type: 'array', items: str },
        current: {},
        reason: { description: 'why a plugin upload was refused', enum: [...REJECTION_REASONS] },
        requestId: { type: 'string', description: '500 and 503: the x-request-id under which the control plane logged the cause' },
        code: { type: 'string', description: '503: STORAGE_FULL when the database is out of disk space' },
      },
    },
    PluginPackage: {
      type: 'object',
      required: ['name', 'version', 'publisher', 'artifact'],
      additionalProperties: false,
      description: 'signature: ed25519 by the publisher, base64, over the UTF-8 text "igw-plugin/v1:<publisher>/<name>@<version>:sha256:<hex sha256 of the artifact bytes>", or with a description "igw-plugin/v2:<publisher>/<name>@<version>:sha256:<hex sha256 of the artifact bytes>:description-sha256:<hex sha256 of the description\'s UTF-8>"',
      properties: {
        name: { type: 'string', pattern: NAME_PATTERN.source },
        version: { type: 'string', description: 'semantic version, e.g. 1.2.3', maxLength: 64 },
        publisher: { type: 'string', pattern: NAME_PATTERN.source },
        description: { type: 'string', maxLength: 500 },
        artifact: { type: 'string', contentEncoding: 'base64', description: `the plugin bytes, base64 (at most ${MAX_ARTIFACT_BYTES} bytes decoded)` },
        signature: { type: ['string', 'null'], contentEncoding: 'base64', description: 'absent, null or empty: refused as unsigned' },
        keyId: { type: 'string', description: 'kid of the publisher key that signed (optional: all keys of the publisher are tried)' },
      },
    },
    Plugin: {
      type: 'object',
      required: ['name', 'version', 'publisher', 'description', 'keyId', 'digest', 'size', 'signature', 'uploadedBy', 'uploadedAt', 'trust'],
      additionalProperties: false,
      properties: {
        name: str,
        version: str,
        publisher: str,
        description: { type: ['string', 'null'] },
        keyId: str,
        digest: { type: 'string', pattern: '^sha256:[0-9a-f]{64}$' },
        size: { type: 'integer', minimum: 1 },
        signature: str,
        uploadedBy: str,
        uploadedAt: isoTime,
        trust: { enum: ['trusted', 'revoked'], description: 'trusted: the key that signed it is in the trust file this control plane runs with and the signature verifies with it; revoked: that key was removed from the trust file (or its id names another key now)' },
      },
    },
    PluginList: { type: 'object', required: ['items'], additionalProperties: false, properties: { items: { type: 'array', items: ref('Plugin') }, next: { type: 'string', description: 'the next page (a path with its query, as in the Link header); absent on the last page' } } },
    ConfigHead: { type: 'object', required: ['version', 'digest', 'document'], additionalProperties: false, properties: { version: int, digest: str, createdAt: isoTime, author: str, document: ref('ConfigDocument') } },
    VersionInfo: { type: 'object', required: ['version', 'digest', 'author', 'summary', 'createdAt'], additionalProperties: false, properties: { version: int, digest: str, author: str, summary: str, createdAt: isoTime } },
    VersionList: { type: 'object', required: ['items'], additionalProperties: false, properties: { items: { type: 'array', items: ref('VersionInfo') }, next: { type: 'string', description: 'the next page (a path with its query, as in the Link header); absent on the last page' } } },
    WriteResult: { type: 'object', required: ['version', 'changed'], additionalProperties: false, properties: { version: int, changed: { type: 'boolean' } } },
    Deleted: { type: 'object', required: ['deleted', 'version'], additionalProperties: false, properties: { deleted: str, version: int } },
    Quota: {
      type: 'object',
      required: ['tenant', 'tenantId', 'kind', 'limitPerDay', 'usedToday'],
      additionalProperties: false,
      properties: { tenant: str, tenantId: { type: 'string', format: 'uuid' }, kind: { enum: ['graphql', 'ingest', 'embeddings', 'subscriptions'] }, limitPerDay: int, usedToday: int },
    },
    QuotaList: { type: 'object', required: ['items'], additionalProperties: false, properties: { items: { type: 'array', items: ref('Quota') } } },
    QuotaInput: { type: 'object', required: ['limitPerDay'], additionalProperties: false, properties: { limitPerDay: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } } },
    AuditEntry: {
      type: 'object',
      required: ['seq', 'at', 'actor', 'action', 'resource', 'diff', 'prevHash', 'hash', 'keyId', 'signature'],
      additionalProperties: false,
      properties: {
        seq: int,
        at: isoTime,
        actor: str,
        action: str,
        resource: str,
        before: {},
        after: {},
        diff: { type: 'array', items: { type: 'object', required: ['path', 'op'], properties: { path: str, op: { enum: ['add', 'remove', 'replace'] }, before: {}, after: {} } } },
        configVersion: { type: ['integer', 'null'] },
        requestId: { type: ['string', 'null'], description: 'the x-request-id of the admin request that made the change (null: none, e.g. the seed, or an entry older than this field)' },
        detail: { type: 'object', description: 'what the action adds beyond before/after (config.rollback: restoredVersion, replacedVersion)' },
        redacted: { type: 'boolean', description: 'true: secrets in before/after/diff were replaced for a caller who may not write (the hash no longer matches; a writer sees the entry whole)' },
        prevHash: str,
        hash: str,
        keyId: str,
        signature: str,
      },
    },
    AuditList: { type: 'object', required: ['items'], additionalProperties: false, properties: { items: { type: 'array', items: ref('AuditEntry') }, next: { type: 'string', description: 'the next page (a path with its query, as in the Link header); absent on the last page' } } },
    AuditVerify: {
      type: 'object',
      required: ['ok', 'entries', 'headHash', 'problems'],
      additionalProperties: false,
      properties: { ok: { type: 'boolean' }, entries: int, headHash: str, problems: { type: 'array', items: { type: 'object', required: ['seq', 'problem'], properties: { seq: int, problem: str } } } },
    },
    Proxy: {
      type: 'object',
      required: ['id', 'connected', 'firstSeen', 'lastSeen', 'appliedVersion', 'lastNack'],
      additionalProperties: false,
      properties: {
        id: str,
        hostname: { type: ['string', 'null'] },
        connected: { type: 'boolean' },
        firstSeen: isoTime,
        lastSeen: isoTime,
        appliedVersion: { type: ['integer', 'null'] },
        ackedAt: { type: ['string', 'null'] },
        lastNack: { oneOf: [{ type: 'null' }, { type: 'object', required: ['version', 'error', 'at'], properties: { version: int, error: str, at: isoTime } }] },
      },
    },
    ProxyList: { type: 'object', required: ['items', 'headVersion'], additionalProperties: false, properties: { headVersion: int, items: { type: 'array', items: ref('Proxy') }, next: { type: 'string', description: 'the next page (a path with its query, as in the Link header); absent on the last page' } } },
    Ack: { type: 'object', required: ['version', 'status'], additionalProperties: false, properties: { version: int, status: { enum: ['ACK', 'NACK'] }, error: str, digest: { type: ['string', 'null'], pattern: '^[0-9a-f]{64}$', description: 'sha256 of the document the proxy runs under that version (the snapshot digest); absent or null: not checked' } } },
    TenantUsage: {
      type: 'object',
      required: ['requests'],
      properties: { requests: { type: 'number', minimum: 0 }, errors: { type: 'number' }, costUnits: { type: 'number' }, rejections: counts, bytesExported: { type: 'number' }, dlpActions: counts, byKind: counts },
    },
    UsageReport: {
      type: 'object',
      required: ['proxyId', 'bootId', 'seq', 'at', 'tenants'],
      properties: { proxyId: str, bootId: str, seq: { type: 'integer', minimum: 1 }, at: isoTime, tenants: { type: 'object', additionalProperties: ref('TenantUsage') } },
    },
    UsageAccepted: { type: 'object', required: ['accepted', 'alerts'], additionalProperties: false, properties: { accepted: { type: 'boolean' }, alerts: int } },
    DayTotals: {
      type: 'object',
      required: ['requests', 'errors', 'costUnits', 'bytesExported', 'rejections', 'dlpActions', 'byKind'],
      additionalProperties: false,
      properties: { day: { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}$' }, requests: int, errors: int, costUnits: int, bytesExported: int, rejections: counts, dlpActions: counts, byKind: counts },
    },
    Statement: {
      type: 'object',
      required: ['tenant', 'tenantId', 'timezone', 'from', 'to', 'generatedAt', 'days', 'totals', 'keyId', 'signature'],
      additionalProperties: false,
      properties: { tenant: str, tenantId: { type: ['string', 'null'] }, timezone: str, from: str, to: str, generatedAt: isoTime, days: { type: 'array', items: ref('DayTotals') }, totals: ref('DayTotals'), keyId: str, signature: str },
    },
    Alert: {
      type: 'object',
      required: ['id', 'at', 'tenant', 'kind', 'severity', 'message', 'detail'],
      additionalProperties: false,
      properties: { id: str, at: isoTime, tenant: { type: ['string', 'null'] }, kind: { enum: ['budget.80', 'budget.100', 'anomaly.rejections', 'anomaly.volume'] }, severity: { enum: ['info', 'warning', 'critical'] }, message: str, detail: { type: 'object' } },
    },
    AlertList: { type: 'object', required: ['items'], additionalProperties: false, properties: { items: { type: 'array', items: ref('Alert') }, next: { type: 'string', description: 'the next page (a path with its query, as in the Link header); absent on the last page' } } },
    PolicyBundle: { type: 'object', required: ['name', 'entrypoints', 'sha256', 'bytes'], additionalProperties: false, properties: { name: str, entrypoints: { type: 'array', items: str }, sha256: str, bytes: int } },
    PolicyList: { type: 'object', required: ['items'], additionalProperties: false, properties: { items: { type: 'array', items: ref('PolicyBundle') } } },
    DecideInput: { type: 'object', required: ['subject', 'action', 'resource'], properties: { subject: { type: 'object' }, action: str, resource: { type: 'object' }, context: { type: 'object' } } },
    Decision: { type: 'object', required: ['allow', 'reason'], additionalProperties: false, properties: { allow: { type: 'boolean' }, reason: str } },
    SigningKey: { type: 'object', required: ['keyId', 'algorithm', 'publicKeyPem'], additionalProperties: false, properties: { keyId: str, algorithm: { const: 'ed25519' }, publicKeyPem: str } },
    Ready: { type: 'object', required: ['status', 'database', 'version'], additionalProperties: false, properties: { status: { const: 'ready' }, database: { enum: ['sqlite', 'postgres'] }, version: int } },
    Health: { type: 'object', required: ['status', 'version', 'proxiesConnected'], additionalProperties: false, properties: { status: str, version: int, proxiesConnected: int } },
    // No tenant: tokens are made with the one keyring every tenant's exports use, so only a subject
    // scoped to no tenant may reveal them (a `tenant` field here was taken and never used).
    DetokenizeInput: { type: 'object', required: ['tokens'], properties: { tokens: { type: 'array', items: str, maxItems: 1000 } } },
    DetokenizeResult: {
      type: 'object',
      required: ['values', 'errors'],
      additionalProperties: false,
      properties: { values: { type: 'object', additionalProperties: { type: ['string', 'null'] } }, errors: { type: 'object', additionalProperties: { enum: ['MALFORMED_TOKEN', 'UNKNOWN_KEY', 'INVALID_TOKEN'] } } },
    },
  }
  /** `name` as responses show it to a reader who may not write it: a `…Shown` variant when redaction changes what it allows. */
  const shownRef = (name: string, path: readonly PropertyKey[]): JsonSchema => {
    const shown = shownSchema(out[name], path) as JsonSchema
    if (JSON.stringify(shown) === JSON.stringify(out[name])) return ref(name)
    out[`${name}Shown`] = { ...shown, description: `${typeof shown.description === 'string' ? `${shown.description} ` : ''}(as shown: to a caller who may not write it, secrets are "${REDACTED}")`.trim() }
    return ref(`${name}Shown`)
  }
  ;(out.ConfigHead!.properties as Record<string, JsonSchema>).document = shownRef('ConfigDocument', [])
  ;(out.RouteFilter!.properties as Record<string, JsonSchema>).config = shownRef('FilterEntry', ['routes', 0, 'filters', 0])
  for (const c of COLLECTIONS) {
    const name = itemSchemaName(c.name)
    out[`${name}Config`] = c.shape === 'list' ? nameFromPath(fromZod(c.schema), '{id}') : fromZod(c.schema)
    const props: Record<string, JsonSchema> = { id: str, etag: str, version: int, config: shownRef(`${name}Config`, [...c.path, c.shape === 'list' ? 0 : '*', ...(c.leaf === undefined ? [] : [c.leaf])]) }
    const required = ['id', 'etag', 'version', 'config']
    if (c.name === 'tenants') {
      props.uuid = { type: 'string', format: 'uuid' }
      required.push('uuid')
    }
    out[name] = { type: 'object', required, additionalProperties: false, properties: props }
    out[`${name}List`] = { type: 'object', required: ['items', 'version'], additionalProperties: false, properties: { version: int, items: { type: 'array', items: ref(name) } } }
  }
  for (const s of SECTIONS) {
    const name = itemSchemaName(s.name)
    out[`${name}Section`] = fromZod(s.schema)
    out[`${name}View`] = { type: 'object', required: ['etag', 'version'], additionalProperties: false, properties: { etag: str, version: int, config: shownRef(`${name}Section`, s.path) } }
  }
  return out
}

/**
 * A list item's `name` is its URL's (`PUT /v1/routes/{id}` stores the body with `name: id`, a
 * different one replaced): the body need not carry it, so the schema must not require it.
 */
function nameFromPath(schema: JsonSchema, param: string): JsonSchema {
  const required = Array.isArray(schema.required) ? (schema.required as string[]).filter((r) => r !== 'name') : undefined
  const properties = schema.properties as Record<string, JsonSchema> | undefined
  const out: JsonSchema = { ...schema }
  if (required === undefined || required.length === 0) delete out.required
  else out.required = required
  if (properties?.name) out.properties = { ...properties, name: { ...properties.name, description: `optional in a request: the path's ${param} (a different name is replaced by it)` } }
  return out
}

/**
 * A filter entry as `PUT /v1/routes/{route}/filters/{filter}` takes it: the path names the filter
 * (the body's `name` is replaced by it), so `name` is optional; without it several kinds of entry
 * can match one body, hence `anyOf` where the document's union is `oneOf`.
 */
function filterEntryInput(schema: JsonSchema): JsonSchema {
  const variants = (schema.oneOf ?? schema.anyOf) as JsonSchema[] | undefined
  if (variants === undefined) return nameFromPath(schema, '{filter}')
  const { oneOf: _oneOf, anyOf: _anyOf, ...rest } = schema
  return { ...rest, anyOf: variants.map((v) => nameFromPath(v, '{filter}')) }
}

/** "tenants" → "Tenant", "qos-tiers" → "QosTier", "dlp" → "Dlp". */
export function itemSchemaName(collection: string): string {
  const singular = collection.endsWith('ies') ? `${collection.slice(0, -3)}y` : collection.endsWith('s') ? collection.slice(0, -1) : collection
  return singular
    .split(/[-_]/)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('')
}

export { ref }
