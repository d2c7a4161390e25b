// The OpenAPI 3.1 document, generated from the route table that serves the requests (so it
// cannot describe an endpoint that does not exist), with config schemas from the zod schema.
import type { RouteDef } from './http-kit.ts'
import { QUOTA_KINDS } from './quota-section.ts'
import { componentSchemas, ref } from './schemas.ts'

/**
 * Path parameters whose values the server checks before the handler runs: an integer version
 * (anything else is a 400) and a quota kind (anything else is a 404 on GET/DELETE, a 400 on PUT).
 * Other parameters are ids, any percent-encoded UTF-8 without NUL.
 */
const PATH_PARAM_SCHEMAS: Record<string, Record<string, unknown>> = {
  version: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  kind: { type: 'string', enum: [...QUOTA_KINDS] },
}

const problemOf = (description: string) => ({ description, content: { 'application/problem+json': { schema: ref('Problem') } } })
const headerRef = (name: string) => ({ $ref: `#/components/headers/${name}` })

/**
 * Headers the server sends with a status whatever the operation (server.ts, http-kit.ts): every
 * response has x-request-id; a 401 has the Bearer challenge, a 412 the current ETag (when the
 * item exists), a 503 from an unavailable or full database Retry-After.
 */
function statusHeaders(status: string): Record<string, unknown> {
  const out: Record<string, unknown> = { 'x-request-id': headerRef('RequestId') }
  if (status === '401') out['WWW-Authenticate'] = headerRef('WwwAuthenticate')
  if (status === '412') out.ETag = headerRef('CurrentETag')
  if (status === '503') out['Retry-After'] = headerRef('RetryAfter')
  return out
}

const GRAPHQL_ERRORS = { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } }
const graphqlErrors = (description: string, both = true) => ({
  description,
  content: { 'application/json': { schema: GRAPHQL_ERRORS }, ...(both ? { 'application/graphql-response+json': { schema: GRAPHQL_ERRORS } } : {}) },
})
const GRAPHQL_RESULT = { type: 'object', properties: { data: {}, errors: { type: 'array' }, extensions: { type: 'object' } } }

export function buildOpenApi(routes: RouteDef[], serverUrl?: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const r of routes) {
    const params: Record<string, unknown>[] = []
    for (const m of r.path.matchAll(/\{(\w+)\}/g)) params.push({ name: m[1], in: 'path', required: true, schema: PATH_PARAM_SCHEMAS[m[1]!] ?? { type: 'string' } })
    for (const q of r.doc.query ?? []) params.push({ name: q.name, in: 'query', required: q.required ?? false, description: q.description, schema: q.schema })
    if (r.doc.ifMatch) {
      params.push({ name: 'If-Match', in: 'header', required: false, description: 'the ETag you read; 412 if it changed since', schema: { type: 'string' } })
      params.push({ name: 'If-None-Match', in: 'header', required: false, description: '"*": create only, 412 if it exists; entity tags: 412 if the current ETag is one of them (weak comparison)', schema: { type: 'string' } })
    } else if (r.doc.responses[304] !== undefined) {
      params.push({ name: 'If-None-Match', in: 'header', required: false, description: 'the ETag you have: 304 without a body while it is current (weak comparison; "*" always)', schema: { type: 'string' } })
    }
    const responses: Record<string, unknown> = {}
    for (const [status, resp] of Object.entries(r.doc.responses)) {
      const out: Record<string, unknown> = { description: resp.description }
      if (resp.schema) out.content = { [resp.contentType ?? 'application/json']: { schema: resp.schema } }
      if (resp.etag) out.headers = { ETag: { description: 'strong validator for If-Match', schema: { type: 'string' } } }
      if (resp.link) out.headers = { ...(out.headers as object | undefined), Link: { description: 'RFC 8288 `<…>; rel="next"`: the next page (the body\'s `next`); absent on the last page', schema: { type: 'string' } } }
      if (resp.location) out.headers = { ...(out.headers as object | undefined), Location: { description: 'the path of the resource created (this request\'s)', schema: { type: 'string' } } }
      responses[status] = out
    }
    // The server refuses, for every route and before its handler (and its authentication) runs, a
    // path segment that is not UTF-8 percent-encoding and a NUL in a path or query value — any
    // query parameter, named here or not (server.ts): every operation can answer 400.
    responses['400'] ??= problemOf(
      r.path.includes('{') || (r.doc.query?.length ?? 0) > 0
        ? 'a path or query parameter is malformed (not UTF-8 percent-encoding, a NUL, an integer out of range)'
        : 'a query parameter holds a NUL (U+0000), refused on every route',
    )
    // Every JSON body is read by readJson (http-kit.ts): not JSON, too deep, too large, wrong type.
    if (r.doc.requestBody) {
      responses['400'] ??= problemOf('the body is not JSON, nests deeper than 128 levels, or is not what this operation takes')
      responses['413'] ??= problemOf('the body is too large')
      responses['415'] ??= problemOf('the body is not application/json, declares a charset other than UTF-8, or is compressed (a Content-Encoding other than identity)')
    }
    // Whatever the handler: an unexpected error is a generic 500 naming the request id (server.ts).
    responses['500'] ??= problemOf('an unexpected error; the control plane log has it under requestId')
    for (const [status, resp] of Object.entries(responses)) {
      const out = resp as { headers?: Record<string, unknown> }
      out.headers = { ...statusHeaders(status), ...out.headers }
    }
    const op: Record<string, unknown> = {
      operationId: `${r.method.toLowerCase()}${r.path.replace(/\{(\w+)\}/g, 'By_$1').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      summary: r.doc.summary,
      tags: r.doc.tags,
      responses,
    }
    if (params.length) op.parameters = params
    if (r.doc.requestBody) op.requestBody = { required: true, content: { 'application/json': { schema: r.doc.requestBody } } }
    op.security = r.auth ? [{ bearer: [] }] : []
    if (r.auth) op['x-igw-abac'] = r.auth.action
    ;(paths[r.path] ??= {})[r.method.toLowerCase()] = op
  }
  // Served by server.ts itself, beside the route table.
  paths['/openapi.json'] = {
    get: {
      operationId: 'getOpenapiJson',
      summary: 'This document (OpenAPI 3.1)',
      tags: ['meta'],
      security: [],
      responses: { 200: { description: 'the OpenAPI document', headers: statusHeaders('200'), content: { 'application/json': { schema: { type: 'object', required: ['openapi', 'paths'], properties: { openapi: { type: 'string' }, paths: { type: 'object' } } } } } } },
    },
  }
  const graphqlResponses = (method: 'get' | 'post'): Record<string, unknown> => {
    const responses: Record<string, unknown> = {
      200: { description: 'GraphQL response (a field error, FORBIDDEN included, is in `errors` beside the `data` that could be resolved)', content: { 'application/json': { schema: GRAPHQL_RESULT }, 'application/graphql-response+json': { schema: GRAPHQL_RESULT } } },
      400: graphqlErrors(
        'a document over a limit (size, tokens, depth, aliases, more than one mutation field), refused before execution; a malformed request (invalid JSON, `variables` not an object); with Accept: application/graphql-response+json, also a document that does not parse or validate',
      ),
      401: graphqlErrors('missing or invalid bearer token', false),
      405: { ...graphqlErrors(method === 'get' ? 'a mutation sent with GET (Allow: POST)' : 'not GET, HEAD or POST', false), headers: { Allow: { description: 'the methods that may carry this request', schema: { type: 'string' } } } },
      406: { description: 'Accept names no media type the server answers with (application/json, application/graphql-response+json)' },
      503: graphqlErrors('the database is unavailable (SERVICE_UNAVAILABLE, Retry-After: 5) or out of disk space (STORAGE_FULL, Retry-After: 30), or no config yet'),
    }
    if (method === 'post') {
      responses[413] = graphqlErrors('request body over 4 MiB')
      responses[415] = graphqlErrors('not a JSON body (application/json, application/*+json or application/graphql; form posts and multipart uploads are not accepted), or a compressed one (Content-Encoding)', false)
    }
    for (const [status, resp] of Object.entries(responses)) {
      const out = resp as { headers?: Record<string, unknown> }
      out.headers = { ...statusHeaders(status), ...out.headers }
    }
    return responses
  }
  const graphqlRequest = { type: 'object', required: ['query'], properties: { query: { type: 'string' }, variables: { type: ['object', 'null'] }, operationName: { type: ['string', 'null'] }, extensions: { type: ['object', 'null'] } } }
  paths['/graphql'] = {
    get: {
      operationId: 'getGraphql',
      summary: 'GraphQL admin API over GET: queries only (a mutation is a 405); the same limits and @auth(abac) as POST',
      tags: ['graphql'],
      security: [{ bearer: [] }],
      parameters: [
        { name: 'query', in: 'query', required: true, description: 'the GraphQL document', schema: { type: 'string' } },
        { name: 'variables', in: 'query', required: false, description: 'a JSON object', schema: { type: 'string' } },
        { name: 'operationName', in: 'query', required: false, schema: { type: 'string' } },
        { name: 'extensions', in: 'query', required: false, description: 'a JSON object', schema: { type: 'string' } },
      ],
      responses: graphqlResponses('get'),
    },
    post: {
      operationId: 'postGraphql',
      summary: 'GraphQL admin API (seed schema: quotas, setQuota, setDlpPreset; fields guarded by @auth(abac))',
      tags: ['graphql'],
      security: [{ bearer: [] }],
      requestBody: { required: true, content: { 'application/json': { schema: graphqlRequest }, 'application/graphql': { schema: { type: 'string', description: 'the document itself' } } } },
      responses: graphqlResponses('post'),
    },
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'IntelGraph Gateway control plane',
      version: '1',
      description: 'Stores the versioned config document (the same schema as the proxy file), validates every write with the proxy’s own schema, audits it, and pushes signed snapshots to proxies.',
    },
    ...(serverUrl ? { servers: [{ url: serverUrl }] } : {}),
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      headers: {
        RequestId: { description: 'the request id: the caller’s x-request-id when it is a plain token ([\\w.:@-], at most 128 characters), else a new UUID; it names the log lines and the audit entry of the request', schema: { type: 'string' } },
        WwwAuthenticate: { description: 'Bearer challenge (RFC 6750): `Bearer error="invalid_token", error_description="<why>"`; without a bearer token in the request, `Bearer realm="igw-control-plane"` (no error code, §3.1)', schema: { type: 'string' } },
        CurrentETag: { description: 'the current ETag of the item (absent when it does not exist): send it as If-Match after reading the item again', schema: { type: 'string' } },
        RetryAfter: { description: 'seconds to wait: 5 while the database is unavailable, 30 while it is out of disk space (absent on other 503s: no config yet, an unreadable DLP keyring)', schema: { type: 'integer', minimum: 0 } },
      },
      schemas: componentSchemas(),
    },
    security: [{ bearer: [] }],
  }
}

export { ref }
