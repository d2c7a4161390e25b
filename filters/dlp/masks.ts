// The `mask` action: shape-keeping partial values. Enough stays to recognise a value you already
// know (the domain of an e-mail, the last four digits), never enough to recover it. E-mail local
// parts and phone middles get a fixed run of stars so the mask does not leak their length.
import { phoneMask } from './validators.ts'

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57
}

/** a***@example.com (a***%40example.com, a***%2540example.com for a percent-encoded address; "j***"@example.com) */
function maskEmail(v: string): string {
  let at = v.lastIndexOf('@')
  if (at === -1) at = v.lastIndexOf('%40')
  if (at === -1) at = v.lastIndexOf('%2540')
  if (at <= 0) return '***'
  // A field's value is matched with its surrounding blanks and "mailto:" left out: the character
  // kept is the address's first, not a leading space (" alice@x.com" gave " ***@x.com").
  let start = 0
  while (start < at && isBlank(v.charCodeAt(start))) start++
  if (at - start >= 7 && v.slice(start, start + 7).toLowerCase() === 'mailto:') start += 7
  if (at <= start) return `${v.slice(0, start)}***${v.slice(at)}`
  // A quoted local part ("john doe"@) keeps both quotes and the first character inside them:
  // keeping its first character, the opening quote, gave `"***@corp.com`, a quote never closed.
  const domain = maskDomainLiteral(v.slice(at))
  if (v[start] === '"' && v[at - 1] === '"' && at - start >= 3) return `${v.slice(0, start)}"${v[start + 1]}***"${domain}`
  return `${v.slice(0, start)}${v[start]}***${domain}`
}

/**
 * "@[192.168.1.1]" (an address literal) keeps what the address's own mask keeps, "@[192.168.*.*]":
 * the domain of a name is kept, but this one is an IP address a preset may hide on its own.
 */
function maskDomainLiteral(d: string): string {
  if (!d.startsWith('@[') || !d.endsWith(']')) return d
  const inner = d.slice(2, -1)
  return /^ipv6:/i.test(inner) ? `@[${inner.slice(0, 5)}${maskIpv6(inner.slice(5))}]` : `@[${maskIpv4(inner)}]`
}

/** The characters String.prototype.trim removes (ECMAScript WhiteSpace and LineTerminator). */
function isBlank(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0xfeff || c === 0x2028 || c === 0x2029 || c === 0x3000 || (c >= 0x2000 && c <= 0x200a) || c === 0x1680 || c === 0x202f || c === 0x205f
}

/** +1*******0123 */
function maskPhone(v: string): string {
  const mask = phoneMask(v)
  if (mask === undefined) return digitCount(v) >= 8 ? keepLastDigits(v, 4) : maskGeneric(v)
  // "(+44) 20 7946 0018" is found from its "+": the ")" closing the country code stays, or the
  // mask left "(+44*******0018" with a bracket never closed.
  const cc = /^\+\d{1,3}\)/.exec(v)?.[0]
  return cc !== undefined && mask.startsWith(cc.slice(0, -1)) ? `${cc}${mask.slice(cc.length - 1)}` : mask
}

/** ***-**-6789 */
function maskSsn(v: string): string {
  let digits = ''
  for (let i = 0; i < v.length; i++) if (isDigit(v.charCodeAt(i))) digits += v[i]
  if (digits.length !== 9) return maskGeneric(v)
  return `***-**-${digits.slice(-4)}`
}

function digitCount(v: string): number {
  let n = 0
  for (let i = 0; i < v.length; i++) if (isDigit(v.charCodeAt(i))) n++
  return n
}

/** Every digit but the last `keep` becomes "*"; separators stay (**** **** **** 1111). */
function keepLastDigits(v: string, keep: number): string {
  let total = 0
  for (let i = 0; i < v.length; i++) if (isDigit(v.charCodeAt(i))) total++
  let seen = 0
  let out = ''
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (isDigit(c)) {
      seen++
      out += seen > total - keep ? v[i] : '*'
    } else out += v[i]
  }
  return out
}

/** DE** **** **** **** **30 00: country code and last four characters stay (and the line break of a wrapped one). */
function maskIban(v: string): string {
  let alnum = 0
  for (let i = 0; i < v.length; i++) if (!isGroupGap(v[i]!)) alnum++
  if (alnum < 12) return maskGeneric(v)
  let seen = 0
  let out = ''
  for (let i = 0; i < v.length; i++) {
    if (isGroupGap(v[i]!)) {
      out += v[i]
      continue
    }
    seen++
    out += seen <= 2 || seen > alnum - 4 ? v[i] : '*'
  }
  return out
}

function isGroupGap(c: string): boolean {
  return c === ' ' || c === '\n' || c === '\r' || c === '-'
}

/** 203.0.*.* */
function maskIpv4(v: string): string {
  const p = v.split('.')
  if (p.length !== 4) return maskGeneric(v)
  return `${p[0]}.${p[1]}.*.*`
}

/** 2001:db8:*: the first two groups (the allocation) stay. */
function maskIpv6(v: string): string {
  const p = v.split(':')
  if (p.length < 3) return maskGeneric(v)
  return `${p[0] || '0'}:${p[1] || '0'}:*`
}

/**
 * Types a custom rule pack adds (and values of a built-in type that lack its shape, which a
 * custom pack's looser rule may find): the last four characters stay, never more than a third
 * of the value — "*2345" would leave one character to guess.
 */
function maskGeneric(v: string): string {
  if (v.length <= 4) return '****'
  const keep = Math.min(4, Math.floor(v.length / 3))
  return `${'*'.repeat(Math.min(v.length - keep, 12))}${v.slice(v.length - keep)}`
}

/** Card numbers: 12-19 digits; anything shorter would keep too much of itself. */
function maskCard(v: string): string {
  return digitCount(v) >= 12 ? keepLastDigits(v, 4) : maskGeneric(v)
}

const MASKS: Record<string, (v: string) => string> = {
  email: maskEmail,
  phone_e164: maskPhone,
  ssn_us: maskSsn,
  credit_card: maskCard,
  iban: maskIban,
  ipv4: maskIpv4,
  ipv6: maskIpv6,
}

export function maskerFor(type: string): (v: string) => string {
  // Own properties only: a custom type named "constructor" must not get Object() as its mask
  // (which returned the value itself).
  const mask = Object.hasOwn(MASKS, type) ? MASKS[type]! : maskGeneric
  return (v) => keepBlanks(v, mask)
}

/**
 * A field's value is matched with its surrounding blanks (validators trim it): they are not part
 * of the value, so the mask keeps them where they were and masks what is between. A CSV cell
 * `" 123-45-6789 "` became `"***-**-6789"`, `"203.0.113.9 "` became `"203.0.*.*"` (the last
 * octet's blank went with it), `" +1 415 555 0123 "` became `"+1*******0123"`, and a generic
 * mask counted the blanks as characters of the value.
 */
function keepBlanks(v: string, mask: (v: string) => string): string {
  let start = 0
  let end = v.length
  while (start < end && isBlank(v.charCodeAt(start))) start++
  while (end > start && isBlank(v.charCodeAt(end - 1))) end--
  if (start === 0 && end === v.length) return mask(v)
  if (start === end) return v
  return `${v.slice(0, start)}${mask(v.slice(start, end))}${v.slice(end)}`
}
