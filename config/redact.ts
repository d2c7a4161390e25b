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
  // A topic's `variables` are free-form JSON sent upstream: there a secret-named key's whole value
  // is secret, nested maps and lists included (`auth: {token: …}`, `apiKey: {value: …}`), where
  // elsewhere only the nearest name decides (a tenant named "private-bank" holds no secret).
  const v = path.lastIndexOf('variables')
  if (v !== -1) for (let i = v + 1; i < path.length - 1; i++) if (typeof path[i] === 'string' && isSecretKey(path[i] as string)) return true
  for (let i = path.length - 1; i >= 0; i--) {
    const p = path[i]
    if (typeof p === 'number') continue // previousCursorKeys[0]: the array's name decides
    const key = String(p)
    // An entry of a map named like a header-name field (`initPayloadHeaders: {authorization:
    // authorization}`: payload key → header name) holds a name, not a credential.
    const parent = path[i - 1]
    if (typeof parent === 'string' && HEADER_NAMES_KEY.test(parent)) return false
    // The tenant filter's `jwt.cookie` names the cookie a token is read from, as `jwt.header` does.
    if (key === 'cookie' && parent === 'jwt') return false
    if (isSecretKey(key)) return true
    // the values of an outgoing header map: quotas.events.webhook.headers.<name>
    return i > 0 && path[i - 1] === 'headers' && i === path.length - 1
  }
  return false
}

const isLetter = (c: number) => (c | 0x20) >= 97 && (c | 0x20) <= 122
const isDigit = (c: number) => c >= 48 && c <= 57
/** RFC 3986 scheme characters: letters, digits, "+", "-", ".". */
const isSchemeChar = (c: number) => isLetter(c) || isDigit(c) || c === 43 || c === 45 || c === 46
/** Where a URL ends in running text: whitespace, a quote, "<" or ">". */
const isUrlEnd = (c: number) => c <= 32 || c === 34 || c === 39 || c === 60 || c === 62

/**
 * An authority cut short by a raw "/", "?" or "#" inside a password: "user:pass" or ":pass" that
 * is no host:port ("redis://:AbC/dEf+gh==@redis:6379", a base64 password pasted unencoded).
 */
function passwordCutShort(authority: string): boolean {
  if (authority.startsWith('[')) return false // an IPv6 host
  const colon = authority.indexOf(':')
  return colon === 0 || (colon > 0 && !/^\d*$/.test(authority.slice(colon + 1)))
}

/** One URL: credentials in its authority and secret-looking query parameters replaced. */
function redactUrl(scheme: string, rest: string): string {
  // The authority ends at the first "/", "?" or "#"; credentials end at its LAST "@"
  // (a password may hold a raw "@": "redis://u:p@ss@host" is user "u", password "p@ss").
  let end = rest.search(/[/?#]/)
  let authority = end === -1 ? rest : rest.slice(0, end)
  // A password holding a raw "/", "?" or "#" (base64 has "/") is no valid URL, and the error
  // quoting the value printed it whole: the authority seemed to end inside the password, with no
  // "@" in it. Then the credentials run to the last "@" of the URL.
  if (end !== -1 && !authority.includes('@') && passwordCutShort(authority)) {
    const lastAt = rest.lastIndexOf('@')
    if (lastAt > end) {
      const hostEnd = rest.slice(lastAt + 1).search(/[/?#]/)
      end = hostEnd === -1 ? -1 : lastAt + 1 + hostEnd
      authority = end === -1 ? rest : rest.slice(0, end)
    }
  }
  let tail = end === -1 ? '' : rest.slice(end)
  const at = authority.lastIndexOf('@')
  const host = at === -1 ? authority : `${REDACTED}@${authority.slice(at + 1)}`
  tail = tail.replace(/([?&;])([^=&#\s]+)=([^&#\s]*)/g, (m, sep: string, name: string) => (SECRET_PARAM.test(name) ? `${sep}${name}=${REDACTED}` : m))
  return `${scheme}${host}${tail}`
}

/**
 * Credentials ("user:pass@") and secret-looking query parameters inside URLs of a string. Each
 * "://" is found with indexOf and its scheme read backwards (at most 64 characters, starting with
 * a letter, also after "_", which the old pattern's word boundary missed): linear in the string. A
 * regular expression for the same
 * (`\b[a-z][a-z0-9+.-]*://`) re-scanned the rest of every word from each word start, and a few
 * hundred KB of "a.a.a…" in a refused value blocked the event loop for minutes.
 */
export function redactUrlCredentials(s: string): string {
  let i = s.indexOf('://')
  if (i === -1) return s
  let out = ''
  let copied = 0
  while (i !== -1) {
    let j = i
    while (j > copied && i - j < 64 && isSchemeChar(s.charCodeAt(j - 1))) j--
    let p = -1
    for (let k = j; k < i; k++) {
      if (isLetter(s.charCodeAt(k))) {
        p = k
        break
      }
    }
    if (p === -1) {
      i = s.indexOf('://', i + 3)
      continue
    }
    let e = i + 3
    while (e < s.length && !isUrlEnd(s.charCodeAt(e))) e++
    out += s.slice(copied, p) + redactUrl(s.slice(p, i + 3), s.slice(i + 3, e))
    copied = e
    i = s.indexOf('://', e)
  }
  return out + s.slice(copied)
}

/**
 * A webhook's URL (`quotas.events.webhook.url`): Slack, Discord and Teams incoming webhooks carry
 * their credential in the path (`https://hooks.slack.com/services/T…/B…/<secret>`), which no
 * credential or query rule sees. Shown as its origin, the rest redacted: /config and a viewer's
 * GET /v1/alert-sinks handed anyone who may read the config a URL that posts to the channel.
 */
export function isWebhookUrlPath(path: readonly PropertyKey[]): boolean {
  const n = path.length
  return n >= 2 && path[n - 1] === 'url' && path[n - 2] === 'webhook'
}

function redactWebhookUrl(value: string): string {
  const u = URL.parse(value)
  if (u === null) return REDACTED
  return u.pathname === '/' && u.search === '' && u.hash === '' && u.username === '' && u.password === '' ? value : `${u.origin}/${REDACTED}`
}

/** The document with every secret replaced, for showing (admin /config). */
export function redactConfig(value: unknown, path: readonly PropertyKey[] = []): unknown {
  if (typeof value === 'string') return isSecretPath(path) ? REDACTED : isWebhookUrlPath(path) ? redactWebhookUrl(value) : redactUrlCredentials(value)
  // Whatever its type: an unquoted `apiKey: 12345678` (or `${PIN}` of digits) is a number.
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return isSecretPath(path) ? REDACTED : value
  if (Array.isArray(value)) return value.map((v, i) => redactConfig(v, [...path, i]))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = redactConfig(v, [...path, k])
    return out
  }
  return value
}
