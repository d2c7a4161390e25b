// The OpenAPI 3.1 document, generated from the route table that serves the requests (so it
// cannot describe an endpoint that does not exist), with config schemas from the zod schema.
import type { RouteDef } from './http-kit.ts'
import { componentSchemas, ref } from './schemas.ts'

export function buildOpenApi(routes: RouteDef[], serverUrl?: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const r of routes) {
    const params: Record<string, unknown>[] = []
    for (const m of r.path.matchAll(/\{(\w+)\}/g)) params.push({ name: m[1], in: 'path', required: true, schema: { type: 'string' } })
    for (const q of r.doc.query ?? []) params.push({ name: q.name, in: 'query', required: q.required ?? false, description: q.description, schema: q.schema })
    if (r.doc.ifMatch) {
      params.push({ name: 'If-Match', in: 'header', required: false, description: 'the ETag you read; 412 if it changed since', schema: { type: 'string' } })
      params.push({ name: 'If-None-Match', in: 'header', required: false, description: '"*": create only, 412 if it exists', schema: { type: 'string' } })
    }
    const responses: Record<string, unknown> = {}
    for (const [status, resp] of Object.entries(r.doc.responses)) {
      const out: Record<string, unknown> = { description: resp.description }
      if (resp.schema) out.content = { [resp.contentType ?? 'application/json']: { schema: resp.schema } }
      if (resp.etag) out.headers = { ETag: { description: 'strong validator for If-Match', schema: { type: 'string' } } }
      if (resp.link) out.headers = { ...(out.headers as object | undefined), Link: { description: 'RFC 8288 `<…>; rel="next"`: the next page (the body\'s `next`); absent on the last page', schema: { type: 'string' } } }
      responses[status] = out
    }
    // The server refuses, for every route, a path segment that is not UTF-8 percent-encoding and
    // a NUL in a path or query value (server.ts): such operations can answer 400 even when their
    // own handler never does.
    if (!('400' in responses) && (r.path.includes('{') || (r.doc.query?.length ?? 0) > 0)) {
      responses['400'] = { description: 'a path or query parameter is malformed (not UTF-8 percent-encoding, a NUL, an integer out of range)', content: { 'application/problem+json': { schema: ref('Problem') } } }
    }
    // Every JSON body is read by readJson (http-kit.ts): not JSON, too deep, too large, wrong type.
    if (r.doc.requestBody) {
      const problemOf = (description: string) => ({ description, content: { 'application/problem+json': { schema: ref('Problem') } } })
      responses['400'] ??= problemOf('the body is not JSON, nests deeper than 128 levels, or is not what this operation takes')
      responses['413'] ??= problemOf('the body is too large')
      responses['415'] ??= problemOf('the body is not application/json')
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
  paths['/graphql'] = {
    post: {
      operationId: 'postGraphql',
      summary: 'GraphQL admin API (seed schema: quotas, setQuota, setDlpPreset; fields guarded by @auth(abac))',
      tags: ['graphql'],
      security: [{ bearer: [] }],
      requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['query'], properties: { query: { type: 'string' }, variables: { type: 'object' }, operationName: { type: 'string' } } } } } },
      responses: {
        200: { description: 'GraphQL response', content: { 'application/json': { schema: { type: 'object', properties: { data: {}, errors: { type: 'array' } } } }, 'application/graphql-response+json': { schema: { type: 'object' } } } },
        400: { description: 'a document over a limit (size, tokens, depth, aliases, more than one mutation field), refused before execution', content: { 'application/json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } }, 'application/graphql-response+json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } } } },
        401: { description: 'missing or invalid bearer token', content: { 'application/json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } } } },
        413: { description: 'request body over 4 MiB', content: { 'application/json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } }, 'application/graphql-response+json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } } } },
        415: { description: 'not a JSON body (application/json, application/*+json or application/graphql; form posts and multipart uploads are not accepted)', content: { 'application/json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } } } },
        503: { description: 'the database is unavailable (SERVICE_UNAVAILABLE, Retry-After: 5) or out of disk space (STORAGE_FULL, Retry-After: 30)', content: { 'application/json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } }, 'application/graphql-response+json': { schema: { type: 'object', required: ['errors'], properties: { errors: { type: 'array' } } } } } },
      },
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
      schemas: componentSchemas(),
    },
    security: [{ bearer: [] }],
  }
}

export { ref }
