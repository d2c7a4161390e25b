// Small reusable schema pieces. Every message here is written for an operator reading a
// config error: it says what was expected; the formatter adds the path and what was found.
import { z } from 'zod'

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
}

/** "1mib", "512 KB", "1048576" or a number → bytes. Returns NaN when the text is not a size. */
export function parseByteSize(value: string | number): number {
  if (typeof value === 'number') return value
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value)
  if (!m) return Number.NaN
  const unit = (m[2] || 'b').toLowerCase()
  const mult = BYTE_UNITS[unit]
  if (mult === undefined) return Number.NaN
  return Math.floor(Number(m[1]) * mult)
}

export const byteSize = z
  .union([z.int().nonnegative(), z.string()], {
    error: 'expected a byte size such as 1048576, "512kib" or "10mb"',
  })
  .transform((v, ctx) => {
    const n = parseByteSize(v)
    // A string's size is not bounded by the int branch: "99999999999999999999999gb" (1e32) and
    // "9007199254740993" (rounded to …992) were accepted as sizes no integer arithmetic holds.
    if (!Number.isSafeInteger(n) || n < 0) {
      ctx.addIssue({ code: 'custom', message: 'expected a byte size such as 1048576, "512kib" or "10mb"', input: v })
      return z.NEVER
    }
    return n
  })

/** setTimeout's longest delay (~24.8 days): Node fires a longer one after 1 ms. */
export const MAX_DURATION_MS = 2 ** 31 - 1

/**
 * Milliseconds; 0 means "disabled" where a field documents it. Bounded by what a timer holds:
 * `shutdown.drainTimeoutMs: 3000000000` (meant as "wait as long as it takes") cut every request
 * in flight 1 ms into a drain, and a larger `timeouts.totalMs` re-armed a 1 ms timer per request.
 */
export const durationMs = z
  .int({ error: 'expected a whole number of milliseconds' })
  .nonnegative()
  .max(MAX_DURATION_MS, { error: `expected at most ${MAX_DURATION_MS} milliseconds (about 24.8 days, the longest timer Node.js holds)` })

const PORT_ERROR = 'expected a port from 0 to 65535'
const ADDRESS_ERROR = 'expected "host:port", ":port" or "[ipv6]:port"'

/**
 * A listen address; a bare port number is ":port", as `--listen 8080` and IGW_LISTEN=8080 are
 * (`listen: 8080`, or `listen: ${PORT}`, is a number in YAML, and was refused as "expected string").
 */
export const listenAddress = z.union(
  [
    z
      .string()
      // abort: an address without a port is one mistake; the port check below then read "abc" as
      // port "abc" too, and `--listen abc` printed two problems for it
      .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]*):\d{1,5}$/, { error: ADDRESS_ERROR, abort: true })
      // 5 digits also allow 65536–99999, which only fail later inside listen() with a stack trace
      .refine((a) => Number(a.slice(a.lastIndexOf(':') + 1)) <= 65535, { error: PORT_ERROR }),
    z.int().min(0).max(65535, { error: PORT_ERROR }).transform((port) => `:${port}`),
  ],
  { error: (iss) => (iss.code !== 'invalid_union' ? undefined : typeof iss.input === 'string' ? ADDRESS_ERROR : typeof iss.input === 'number' ? `${PORT_ERROR} (a whole number)` : 'expected "host:port", ":port", "[ipv6]:port" or a port number') },
)

export const httpUrl = z.url({ protocol: /^https?$/, error: 'expected URL' })

/** An upstream origin: scheme, host and port only, since routes own the path. */
export const originUrl = httpUrl.refine(
  (u) => {
    let url: URL
    try {
      url = new URL(u)
    } catch {
      return true // already reported as "expected URL"
    }
    return (url.pathname === '/' || url.pathname === '') && !url.search && !url.hash && !url.username && !url.password
  },
  { error: 'expected an origin URL (scheme://host:port) without path, query or credentials' },
)
export const wsOrHttpUrl = z.url({ protocol: /^(https?|wss?)$/, error: 'expected URL' })

export const identifier = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, { error: 'expected a name of letters, digits, "_", "." or "-"' })

/** The syntax of a tenant id (the schema's, and what a data-plane request may name per request). */
export const TENANT_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/

export const tenantId = z
  .string()
  .regex(TENANT_ID, { error: 'expected a tenant id of letters, digits, "_", ".", ":", "@" or "-"' })

export const tierName = z.enum(['gold', 'silver', 'bronze'])
export type Tier = z.infer<typeof tierName>

// Zones already seen valid: building an Intl.DateTimeFormat costs ~0.1 ms, which was most of the
// time a config with 30,000 tenants took to validate (each reload, each control-plane commit).
// Bounded: zone names come from config and admin writes, and there are ~600 real ones.
const validZones = new Set<string>()
function isTimeZone(tz: string): boolean {
  if (validZones.has(tz)) return true
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz })
  } catch {
    return false
  }
  if (validZones.size < 4096) validZones.add(tz)
  return true
}

export const timeZone = z.string().refine(isTimeZone, { error: 'expected an IANA time zone such as "UTC" or "Europe/Berlin"' })

export const failMode = z.enum(['open', 'closed'])

/** Fields every filter entry accepts, whatever the filter. */
export const filterBase = {
  /** What the chain does when this filter throws: skip it (open) or answer 500 (closed). */
  failMode: failMode.default('closed'),
}

/** Parse "host:port" / ":port" / "[::1]:port" into parts for net.listen. */
export function splitListenAddress(addr: string): { host: string | undefined; port: number } {
  const i = addr.lastIndexOf(':')
  let host = addr.slice(0, i)
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
  return { host: host === '' ? undefined : host, port: Number(addr.slice(i + 1)) }
}

/** Whether two listen addresses take the same port on a shared interface (a wildcard takes all; port 0 is any free one). */
export function listenAddressesOverlap(a: { host?: string | undefined; port: number }, b: { host?: string | undefined; port: number }): boolean {
  const wild = (h: string | undefined) => h === undefined || h === '' || h === '0.0.0.0' || h === '::' || h === '*'
  return a.port !== 0 && a.port === b.port && (wild(a.host) || wild(b.host) || a.host === b.host)
}

// RFC 9110 §7.2 / RFC 3986 §3.2.2: a reg-name (unreserved, sub-delims, %HH; raw bytes above 0x7F
// too, as nginx lets an unencoded IDN through) or an IP literal in brackets (RFC 6874 zone
// included), and an optional port of digits.
const VALID_HOST = /^(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=\x80-\xff]|%[0-9A-Fa-f]{2})+|\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9\-._~]+)?\])(?::[0-9]*)?$/

/**
 * True when a Host header value is a host[:port] as RFC 3986 spells it. Node's parser passes any
 * value (`a b`, `evil.com/x`, `x?y`), which reached backends that build absolute URLs from it;
 * nginx answers such a Host 400.
 */
export function isValidHost(host: string): boolean {
  // Not an empty name (`:80`: RFC 9110 §4.2.1, an http URI with an empty host MUST be rejected),
  // nor two dots in a row (`admin.example.com..`, no DNS name; nginx answers 400): it missed the
  // route of the name it spells and went to the host-less routes.
  return VALID_HOST.test(host) && !host.includes('..')
}

/**
 * Which parts of a document that failed some field checks the cross-reference checks may read:
 * `parsed(path)` when no problem was found at the path or above it (an unknown key counts at
 * itself only), `parsed(path, true)` when none was found below it either (a section whose own
 * transform did not run). Those checks ran only on a document with no other problem, so `igw
 * config validate` showed `upstream: nope` only once `maxBodyBytes: lots` was fixed; a check that
 * reads an unparsed part is skipped, so a problem is not reported again as its consequence (an
 * invalid tenant name is not also "unknown tenant").
 */
export type Parsed = (path: readonly PropertyKey[], whole?: boolean) => boolean

export function parsedParts(issues: readonly z.core.$ZodRawIssue[]): Parsed {
  if (issues.length === 0) return () => true
  const key = (path: readonly PropertyKey[]) => path.map((p) => (typeof p === 'number' ? p : JSON.stringify(String(p)))).join('/')
  const at = new Set<string>()
  const within = new Set<string>()
  for (const iss of issues) {
    const path = iss.path ?? []
    for (const p of iss.code === 'unrecognized_keys' ? iss.keys.map((k) => [...path, k]) : [path]) {
      at.add(key(p))
      for (let n = 0; n <= p.length; n++) within.add(key(p.slice(0, n)))
    }
  }
  return (path, whole = false) => {
    for (let n = 0; n <= path.length; n++) if (at.has(key(path.slice(0, n)))) return false
    return !whole || !within.has(key(path))
  }
}
