// What of a config document must never be printed: secrets by the name of the field that holds
// them, credentials and secret-looking query parameters inside URLs, and the values of outgoing
// header maps (an Authorization or X-Api-Key header is a credential whatever its name). Used by
// the admin port's /config and by the error messages that quote a bad value: an operator who
// pastes a too-short JWT secret must not find it in the log.

const SECRET_KEY = /secret|passw(or)?d|passwd|token|api[_-]?key|private|credential|cursor_?keys?$|signing_?key|^authorization$|^cookie$/i
const SECRET_PARAM = /secret|passw(or)?d|token|key|sig(nature)?$|auth|credential/i

const REDACTED = '[redacted]'

/** Fields that name headers (`cache.privateHeaders: [authorization, cookie]`): names, not values. */
const HEADER_NAMES_KEY = /Headers?$/

/** True when a field of this name holds a secret. */
function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key) && !HEADER_NAMES_KEY.test(key)
}

/** True when a config path (["routes", 0, "filters", 1, "jwt", "secret"]) ends in a secret. */
export function isSecretPath(path: readonly PropertyKey[]): boolean {
  for (let i = path.length - 1; i >= 0; i--) {
    const p = path[i]
    if (typeof p === 'number') continue // previousCursorKeys[0]: the array's name decides
    const key = String(p)
    // An entry of a map named like a header-name field (`initPayloadHeaders: {authorization:
    // authorization}`: payload key → header name) holds a name, not a credential.
    const parent = path[i - 1]
    if (typeof parent === 'string' && HEADER_NAMES_KEY.test(parent)) return false
    if (isSecretKey(key)) return true
    // the values of an outgoing header map: quotas.events.webhook.headers.<name>
    return i > 0 && path[i - 1] === 'headers' && i === path.length - 1
  }
  return false
}

/** Credentials ("user:pass@") and secret-looking query parameters inside URLs of a string. */
export function redactUrlCredentials(s: string): string {
  return s.replace(/\b([a-z][a-z0-9+.-]*:\/\/)([^\s"'<>]*)/gi, (_m, scheme: string, rest: string) => {
    // The authority ends at the first "/", "?" or "#"; credentials end at its LAST "@"
    // (a password may hold a raw "@": "redis://u:p@ss@host" is user "u", password "p@ss").
    const end = rest.search(/[/?#]/)
    const authority = end === -1 ? rest : rest.slice(0, end)
    let tail = end === -1 ? '' : rest.slice(end)
    const at = authority.lastIndexOf('@')
    const host = at === -1 ? authority : `${REDACTED}@${authority.slice(at + 1)}`
    tail = tail.replace(/([?&;])([^=&#\s]+)=([^&#\s]*)/g, (m, sep: string, name: string) => (SECRET_PARAM.test(name) ? `${sep}${name}=${REDACTED}` : m))
    return `${scheme}${host}${tail}`
  })
}

/** The document with every secret replaced, for showing (admin /config). */
export function redactConfig(value: unknown, path: readonly PropertyKey[] = []): unknown {
  if (typeof value === 'string') return isSecretPath(path) ? REDACTED : redactUrlCredentials(value)
  if (Array.isArray(value)) return value.map((v, i) => redactConfig(v, [...path, i]))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = redactConfig(v, [...path, k])
    return out
  }
  return value
}
