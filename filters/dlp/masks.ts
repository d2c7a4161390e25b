// The `mask` action: shape-keeping partial values. Enough stays to recognise a value you already
// know (the domain of an e-mail, the last four digits), never enough to recover it. E-mail local
// parts and phone middles get a fixed run of stars so the mask does not leak their length.
import { phoneMask } from './validators.ts'

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57
}

/** a***@example.com */
function maskEmail(v: string): string {
  const at = v.lastIndexOf('@')
  if (at <= 0) return '***'
  const start = v.startsWith('mailto:') ? 7 : 0
  return `${v.slice(0, start)}${v[start]}***${v.slice(at)}`
}

/** +1*******0123 */
function maskPhone(v: string): string {
  return phoneMask(v) ?? keepLastDigits(v, 4)
}

/** ***-**-6789 */
function maskSsn(v: string): string {
  let digits = ''
  for (let i = 0; i < v.length; i++) if (isDigit(v.charCodeAt(i))) digits += v[i]
  return `***-**-${digits.slice(-4)}`
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

/** DE** **** **** **** **30 00: country code and last four characters stay. */
function maskIban(v: string): string {
  let alnum = 0
  for (let i = 0; i < v.length; i++) if (v[i] !== ' ') alnum++
  let seen = 0
  let out = ''
  for (let i = 0; i < v.length; i++) {
    if (v[i] === ' ') {
      out += ' '
      continue
    }
    seen++
    out += seen <= 2 || seen > alnum - 4 ? v[i] : '*'
  }
  return out
}

/** 203.0.*.* */
function maskIpv4(v: string): string {
  const p = v.split('.')
  return `${p[0]}.${p[1]}.*.*`
}

/** 2001:db8:*: the first two groups (the allocation) stay. */
function maskIpv6(v: string): string {
  const p = v.split(':')
  return `${p[0] || '0'}:${p[1] || '0'}:*`
}

/** Types a custom rule pack adds: everything but the last four characters. */
function maskGeneric(v: string): string {
  if (v.length <= 4) return '****'
  return `${'*'.repeat(Math.min(v.length - 4, 12))}${v.slice(-4)}`
}

const MASKS: Record<string, (v: string) => string> = {
  email: maskEmail,
  phone_e164: maskPhone,
  ssn_us: maskSsn,
  credit_card: (v) => keepLastDigits(v, 4),
  iban: maskIban,
  ipv4: maskIpv4,
  ipv6: maskIpv6,
}

export function maskerFor(type: string): (v: string) => string {
  return MASKS[type] ?? maskGeneric
}
