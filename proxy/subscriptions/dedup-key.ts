// Who may share one upstream subscription. Two subscribes share only when everything that can
// change what the backend sends them is equal: route and upstream, tenant, the sharing scope
// (identical credentials by default, or configured verified claims), the document, operation
// name, variables and extensions. Pure functions: the tenant-isolation rules are tested here.
import { createHash } from 'node:crypto'
import { siteOf } from '../router.ts'
import { STREAM_ID_BYTES } from './cursor.ts'
import { isRawJSON } from '../../config/json-numbers.ts'


/**
 * JSON with object keys sorted at every level, so {a,b} and {b,a} give the same text. A
 * JSON.rawJSON value (a number beyond 2^53 or 1e400 as the client wrote it, see protocols.ts) is
 * written as its text, like JSON.stringify does: 9007199254740993 and …992 are two keys, and
 * neither is the key of an object a client sent as {"rawJSON": "…"}.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const s = JSON.stringify(value)
    return s === undefined ? 'null' : s
  }
  if (isRawJSON(value)) return value.rawJSON
  if (Array.isArray(value)) {
    let out = '['
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonicalJson(value[i])
    return `${out}]`
  }
  const obj = value as Record<string, unknown>
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
  let out = '{'
  for (let i = 0; i < keys.length; i++) out += `${i ? ',' : ''}${JSON.stringify(keys[i])}:${canonicalJson(obj[keys[i]!])}`
  return `${out}}`
}

/**
 * The credentials a shared upstream connection is opened with: the forwarded headers and the
 * init payload. Hashed, this is the default sharing scope (identical credentials share).
 */
export function credentialScope(headers: Record<string, string>, initPayload: Record<string, unknown> | undefined): string {
  return `cred:${sha256(canonicalJson({ h: headers, p: initPayload ?? null }))}`
}

/** `headers` with Host as the site it names (router.ts siteOf; the same object when that changes nothing). */
export function identityHeaders(headers: Record<string, string>): Record<string, string> {
  const host = headers.host
  if (host === undefined) return headers
  const id = siteOf(host)
  return id === host ? headers : { ...headers, host: id }
}

export interface StreamIdentity {
  route: string
  upstreamUrl: string
  /** The Host the upstream handshake names, when not the URL's own (hostRewrite, a forwarded Host). */
  host?: string | undefined
  tenant: string | undefined
  scope: string
  docHash: string
  operationName: string | undefined
  variables: Record<string, unknown> | undefined
  extensions: Record<string, unknown> | undefined
}

/** The dedup key (hex sha256) and the stream id cursors carry (its first STREAM_ID_BYTES). */
export function streamKey(s: StreamIdentity): { key: string; streamId: string } {
  // An array, not a concatenation: no field can bleed into the next ("a|b" + "c" vs "a" + "b|c").
  const fields: unknown[] = [s.route, s.upstreamUrl, s.tenant ?? null, s.scope, s.docHash, s.operationName ?? null, s.variables ?? {}, s.extensions ?? {}]
  // A backend may serve each Host its own data, whatever the sharing scope (claims leave headers
  // out). Appended only when set: the streams (and cursors) of every other route keep their ids.
  if (s.host !== undefined) fields.push(s.host)
  const key = sha256(canonicalJson(fields))
  return { key, streamId: key.slice(0, STREAM_ID_BYTES * 2) }
}

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
