// The labeled synthetic corpus for rule pack evaluation: records of fields (JSON keys / CSV
// headers) and free text, each sensitive value labeled by construction, plus hard negatives
// built to look sensitive and fail the rules' definitions (invalid SSN areas, Luhn-failing
// cards, e-mails inside URLs, phone-like order numbers, bad IBAN check digits, versions that
// look like IPs …). A fixed seed makes every run produce the same corpus.
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js/max'
import { ibanValid, luhnValid, ssnDigitsValid } from '../validators.ts'

export const CORPUS_SEED = 20260105
export const CORPUS_SIZE = 6000

export interface Label {
  field: string
  type: string
  value: string
}

export interface CorpusRecord {
  id: number
  fields: Record<string, string>
  /** Every sensitive value in the record (type + exact text). */
  labels: Label[]
  /** How many hard negatives were planted (for the report). */
  hardNegatives: number
}

/** mulberry32: small, fast, reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

class Gen {
  readonly r: () => number
  constructor(seed: number) {
    this.r = rng(seed)
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1))
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!
  }
  digits(n: number): string {
    let s = ''
    for (let i = 0; i < n; i++) s += String(this.int(0, 9))
    return s
  }
  chance(p: number): boolean {
    return this.r() < p
  }
}

const FIRST = ['jane', 'john', 'maria', 'wei', 'aisha', 'lars', 'priya', 'omar', 'chloe', 'diego', 'yuki', 'noah', 'fatima', 'ivan', 'sofia']
const LAST = ['doe', 'smith', 'garcia', 'chen', 'khan', 'nielsen', 'patel', 'haddad', 'martin', 'lopez', 'tanaka', 'brown', 'ali', 'petrov', 'rossi']
const DOMAINS = ['example.com', 'mail.example.org', 'corp.example.net', 'example.co.uk', 'uni.example.edu', 'example.io', 'shop.example.de']
const WORDS = ['shipment', 'invoice', 'customer', 'account', 'update', 'ticket', 'meeting', 'renewal', 'delivery', 'request', 'balance', 'status']

// --- positives --------------------------------------------------------------------------------

function email(g: Gen): string {
  const sep = g.pick(['.', '_', '', '-'])
  let local = `${g.pick(FIRST)}${sep}${g.pick(LAST)}`
  if (g.chance(0.3)) local += String(g.int(1, 999))
  if (g.chance(0.1)) local += `+${g.pick(WORDS)}`
  if (g.chance(0.15)) local = local[0]!.toUpperCase() + local.slice(1)
  return `${local}@${g.pick(DOMAINS)}`
}

const PHONE_TEMPLATES: [CountryCode, string][] = [
  ['US', '+1201555'],
  ['US', '+1415555'],
  ['GB', '+447400'],
  ['DE', '+491512'],
  ['FR', '+336'],
  ['IN', '+9181'],
  ['BR', '+55119'],
  ['JP', '+8190'],
  ['AU', '+614'],
  ['ES', '+346'],
  ['NL', '+316'],
]
const E164_LENGTH: Record<string, number> = { US: 12, GB: 13, DE: 14, FR: 12, IN: 13, BR: 14, JP: 13, AU: 12, ES: 12, NL: 12 }

function phone(g: Gen): { e164: string; country: CountryCode } {
  for (;;) {
    const [country, prefix] = g.pick(PHONE_TEMPLATES)
    const e164 = prefix + g.digits(E164_LENGTH[country]! - prefix.length)
    const p = parsePhoneNumberFromString(e164)
    if (p?.isValid()) return { e164, country }
  }
}

function ssnParts(g: Gen): [string, string, string] {
  for (;;) {
    const a = String(g.int(1, 899)).padStart(3, '0')
    const b = String(g.int(1, 99)).padStart(2, '0')
    const c = String(g.int(1, 9999)).padStart(4, '0')
    if (ssnDigitsValid(a + b + c)) return [a, b, c]
  }
}

/** The Luhn check digit appended. */
export function luhnComplete(partial: string): string {
  for (let d = 0; d <= 9; d++) if (luhnValid(partial + d)) return partial + d
  throw new Error('unreachable')
}

function cardDigits(g: Gen): string {
  const kind = g.int(0, 3)
  if (kind === 0) return luhnComplete(`4${g.digits(14)}`) // Visa 16
  if (kind === 1) return luhnComplete(`5${g.int(1, 5)}${g.digits(13)}`) // Mastercard 16
  if (kind === 2) return luhnComplete(`3${g.pick(['4', '7'])}${g.digits(12)}`) // Amex 15
  return luhnComplete(`6011${g.digits(11)}`) // Discover 16
}

function formatCard(g: Gen, d: string): string {
  const style = g.int(0, 2)
  if (style === 0) return d
  const sep = style === 1 ? ' ' : '-'
  if (d.length === 15) return `${d.slice(0, 4)}${sep}${d.slice(4, 10)}${sep}${d.slice(10)}`
  return d.match(/.{1,4}/g)!.join(sep)
}

const IBAN_SHAPES: [string, number][] = [
  ['DE', 18],
  ['GB', 18],
  ['FR', 23],
  ['NL', 14],
  ['ES', 20],
  ['IT', 23],
]

/** ISO 13616 check digits for a country and BBAN (mod 97). */
export function ibanCheckDigits(country: string, bban: string): string {
  const s = `${bban}${country}00`
  let rem = 0
  for (const ch of s) {
    const c = ch.charCodeAt(0)
    rem = c >= 65 ? (rem * 100 + (c - 55)) % 97 : (rem * 10 + (c - 48)) % 97
  }
  return String(98 - rem).padStart(2, '0')
}

function iban(g: Gen): string {
  const [country, len] = g.pick(IBAN_SHAPES)
  let bban: string
  if (country === 'GB') bban = `${g.pick(['WEST', 'NWBK', 'BARC'])}${g.digits(len - 4)}`
  else if (country === 'NL') bban = `${g.pick(['ABNA', 'INGB', 'RABO'])}${g.digits(len - 4)}`
  else if (country === 'IT') bban = `${String.fromCharCode(65 + g.int(0, 25))}${g.digits(len - 1)}`
  else bban = g.digits(len)
  const compact = `${country}${ibanCheckDigits(country, bban)}${bban}`
  if (!ibanValid(compact)) throw new Error(`generator made an invalid IBAN ${compact}`)
  return g.chance(0.5) ? compact : compact.match(/.{1,4}/g)!.join(' ')
}

function ipv4(g: Gen): string {
  return `${g.int(1, 223)}.${g.int(0, 255)}.${g.int(0, 255)}.${g.int(1, 254)}`
}

function ipv6(g: Gen): string {
  const groups = Array.from({ length: 8 }, () => g.int(0, 0xffff).toString(16))
  groups[0] = g.pick(['2001', 'fe80', '2a00', '2606', 'fd12'])
  if (g.chance(0.5)) {
    // compress a run of zeros
    const at = g.int(2, 5)
    return `${groups.slice(0, at).join(':')}::${groups.slice(at + 2).join(':')}`
  }
  return groups.join(':')
}

// --- hard negatives -------------------------------------------------------------------------

function invalidSsn(g: Gen): string {
  const [a, b, c] = ssnParts(g)
  switch (g.int(0, 4)) {
    case 0:
      return `000-${b}-${c}`
    case 1:
      return `666-${b}-${c}`
    case 2:
      return `9${g.digits(2)}-${b}-${c}`
    case 3:
      return `${a}-00-${c}`
    default:
      return `${a}-${b}-0000`
  }
}

function luhnFailingCard(g: Gen): string {
  const d = cardDigits(g)
  const last = (Number(d.at(-1)) + g.int(1, 9)) % 10
  return formatCard(g, d.slice(0, -1) + last)
}

type Parts = (string | [string, string])[]

/**
 * URLs holding an "@": userinfo, an asset name, a handle (negatives), and since rules 1.2.3 an
 * address that is a whole path segment (labeled; before, these were planted as negatives). The
 * generator is drawn as before, so the rest of the corpus stays the same.
 */
function emailInUrl(g: Gen): Parts {
  const e = email(g)
  const handle = g.pick(FIRST)
  return g.pick<Parts>([[`https://cdn.example.com/u/`, ['email', e], `/avatar.png`], [`https://${e}/`], [`http://files.example.org/share/`, ['email', e]], [`https://example.com/static/logo@2x.png`], [`https://example.com/@${handle}`]])
}

function orderNumber(g: Gen): string {
  return g.pick([`order ${g.digits(10)} shipped`, `order #${g.int(2, 9)}${g.digits(9)} shipped`, `invoice ${g.digits(3)}-${g.digits(3)}-${g.digits(4)}`, `tracking 1Z${g.digits(16)}`, `order ${g.int(100000, 999999)} shipped`, `ref ${g.int(100, 899)}${g.digits(6)}`])
}

function invalidPhone(g: Gen): string {
  return g.pick([`+1 ${g.int(100, 199)} ${g.digits(3)} ${g.digits(4)}`, `+999 ${g.digits(8)}`, `+44 ${g.digits(4)}`, `+1 555 ${g.digits(3)}`])
}

function badIban(g: Gen): string {
  const good = iban(g).replaceAll(' ', '')
  const check = (Number(good.slice(2, 4)) + g.int(1, 50)) % 97
  return `${good.slice(0, 2)}${String(check).padStart(2, '0')}${good.slice(4)}`
}

function notAnIp(g: Gen): string {
  return g.pick([`${g.int(256, 999)}.${g.int(0, 255)}.${g.int(0, 255)}.${g.int(0, 255)}`, `version ${g.int(1, 9)}.${g.int(0, 9)}.${g.int(0, 9)}.${g.int(0, 99)}`, `build ${g.int(1, 20)}.${g.int(0, 9)}.${g.int(0, 9)}.${g.int(100, 999)}`, `${g.int(1, 200)}.${g.int(0, 255)}.${g.int(0, 255)}`, `at ${String(g.int(0, 23)).padStart(2, '0')}:${String(g.int(0, 59)).padStart(2, '0')}:${String(g.int(0, 59)).padStart(2, '0')}`, `mac 00:1a:${g.digits(2)}:3c:4d:5e`])
}

function neutral(g: Gen): string {
  return g.pick([
    `${g.pick(WORDS)} ${g.pick(WORDS)} on 2026-${String(g.int(1, 12)).padStart(2, '0')}-${String(g.int(1, 28)).padStart(2, '0')}`,
    `2026-01-${String(g.int(1, 28)).padStart(2, '0')}T${String(g.int(0, 23)).padStart(2, '0')}:15:00.000Z`,
    `INV-2026-${g.digits(6)}`,
    `qty ${g.int(1, 500)} at $${g.int(1, 999)}.${g.digits(2)}`,
    `${g.pick(FIRST)} ${g.pick(LAST)}`,
  ])
}

// --- records --------------------------------------------------------------------------------

type Planter = (g: Gen, rec: CorpusRecord) => void

function put(rec: CorpusRecord, field: string, value: string, type?: string, labelValue?: string): void {
  rec.fields[field] = value
  if (type !== undefined) rec.labels.push({ field, type, value: labelValue ?? value })
}

function sentence(g: Gen, rec: CorpusRecord, field: string, parts: (string | [string, string])[]): void {
  let text = ''
  for (const p of parts) {
    if (typeof p === 'string') text += p
    else {
      text += p[1]
      rec.labels.push({ field, type: p[0], value: p[1] })
    }
  }
  void g
  rec.fields[field] = text
}

const POSITIVES: Planter[] = [
  (g, r) => put(r, g.pick(['email', 'contactEmail', 'e_mail', 'work_email']), email(g), 'email'),
  (g, r) => sentence(g, r, 'note', [`${g.pick(['Contact', 'Reach', 'Write to'])} `, ['email', email(g)], ` about the ${g.pick(WORDS)}.`]),
  (g, r) => put(r, g.pick(['phone', 'mobile', 'phoneNumber', 'tel']), phone(g).e164, 'phone_e164'),
  (g, r) => {
    const p = parsePhoneNumberFromString(phone(g).e164)!
    sentence(g, r, 'note', [`${g.pick(['Call', 'Text', 'Customer at'])} `, ['phone_e164', p.formatInternational()], ` before noon.`])
  },
  (g, r) => {
    const us = `+1415555${g.digits(4)}`
    const p = parsePhoneNumberFromString(us)
    if (!p?.isValid()) return
    put(r, 'phone', p.formatNational(), 'phone_e164')
  },
  (g, r) => {
    const [a, b, c] = ssnParts(g)
    put(r, g.pick(['ssn', 'SSN', 'social_security_number']), g.chance(0.7) ? `${a}-${b}-${c}` : `${a}${b}${c}`, 'ssn_us')
  },
  (g, r) => {
    const [a, b, c] = ssnParts(g)
    sentence(g, r, 'note', [`${g.pick(['Applicant', 'Employee', 'Patient'])} SSN `, ['ssn_us', g.chance(0.6) ? `${a}-${b}-${c}` : `${a}${b}${c}`], ` on file.`])
  },
  (g, r) => {
    const [a, b, c] = ssnParts(g)
    sentence(g, r, 'comment', [`verified id `, ['ssn_us', `${a}-${b}-${c}`]])
  },
  (g, r) => put(r, g.pick(['cardNumber', 'credit_card', 'pan', 'card']), formatCard(g, cardDigits(g)), 'credit_card'),
  (g, r) => sentence(g, r, 'note', [`Paid with card `, ['credit_card', formatCard(g, cardDigits(g))], ` yesterday.`]),
  (g, r) => put(r, g.pick(['iban', 'IBAN', 'payout_iban']), iban(g), 'iban'),
  (g, r) => sentence(g, r, 'note', [`Refund to `, ['iban', iban(g)], ` please.`]),
  (g, r) => put(r, g.pick(['ip', 'client_ip', 'ipAddress', 'remote_addr']), ipv4(g), 'ipv4'),
  (g, r) => sentence(g, r, 'log', [`login from `, ['ipv4', ipv4(g)], ` ok`]),
  (g, r) => put(r, g.pick(['ip', 'ipv6', 'client_ip']), ipv6(g), 'ipv6'),
  (g, r) => sentence(g, r, 'log', [`peer `, ['ipv6', ipv6(g)], ` connected`]),
]

const NEGATIVES: Planter[] = [
  (g, r) => put(r, g.pick(['note', 'ref', 'code']), invalidSsn(g)),
  (g, r) => put(r, g.pick(['comment', 'memo']), `id ${invalidSsn(g)} rejected`),
  (g, r) => put(r, g.pick(['note', 'memo']), `card ${luhnFailingCard(g)} declined`),
  (g, r) => put(r, g.pick(['reference', 'orderRef']), luhnFailingCard(g).replaceAll(' ', '')),
  (g, r) => {
    const field = g.pick(['url', 'avatar', 'link'])
    sentence(g, r, field, emailInUrl(g))
  },
  (g, r) => sentence(g, r, 'note', ['see ', ...emailInUrl(g), ' for details']),
  (g, r) => put(r, g.pick(['note', 'status']), orderNumber(g)),
  (g, r) => put(r, g.pick(['order_id', 'ticket']), `${g.int(2, 9)}${g.digits(9)}`),
  (g, r) => put(r, 'note', `dial ${invalidPhone(g)} failed`),
  (g, r) => put(r, g.pick(['note', 'account']), `acct ${badIban(g)}`),
  (g, r) => put(r, g.pick(['note', 'build']), notAnIp(g)),
  (g, r) => put(r, 'ref', `${g.int(100, 899)}${g.digits(6)}`),
]

// --- sweep 15: addresses in URLs and IDN domains, cards inside tracking numbers ------------
// Planted in extra records after the first `size`, from their own generator, so the records
// above (and the numbers measured on them before) stay the same.

export const URL_CORPUS_SIZE = 600

const IDN_DOMAINS = ['bücher.de', 'müller.example', '例え.jp', 'пример.рф', 'exämple.com', 'mail.çorp.example.fr']
const IDN_LOCALS = ['jörg', 'zoë', 'françois', 'ümit', 'δοκιμή', 'почта', 'ユーザー', 'jane']

function urlEncodeAt(e: string): string {
  return e.replace('@', '%40').replace('+', '%2B')
}

const URL_POSITIVES: Planter[] = [
  (g, r) => {
    const e = email(g)
    sentence(g, r, g.pick(['url', 'link', 'referrer']), [`https://app.example.com/${g.pick(['u', 'invite', 'unsubscribe'])}?${g.pick(['email', 'e', 'to', 'user'])}=`, ['email', e], g.pick(['', '&x=1', '&lang=en', '#top'])])
  },
  (g, r) => {
    const e = urlEncodeAt(email(g))
    sentence(g, r, g.pick(['url', 'link', 'note']), [`${g.pick(['https://app.example.com/u?', 'https://x.example/reset?token=ab12&', 'GET /signup?'])}email=`, ['email', e], g.pick(['', '&next=%2Fhome', ' 302'])])
  },
  (g, r) => sentence(g, r, 'form', [`name=${g.pick(FIRST)}&email=`, ['email', urlEncodeAt(email(g))], `&plan=${g.pick(WORDS)}`]),
  (g, r) => sentence(g, r, 'link', [`https://crm.example.com/contact?to=mailto:`, ['email', email(g)]]),
  (g, r) => {
    const e = `${g.pick(IDN_LOCALS)}@${g.pick(IDN_DOMAINS)}`
    if (g.chance(0.4)) put(r, g.pick(['email', 'contact_email']), e, 'email')
    else sentence(g, r, 'note', [`${g.pick(['Schreiben Sie an', 'Écrire à', 'Write to', '連絡先'])} `, ['email', e], g.pick(['.', ' bitte', ''])])
  },
]

/** A USPS-style 22-digit tracking number in groups of 4 that holds a Luhn-valid card window. */
function trackingWithCardWindow(g: Gen): string {
  for (;;) {
    const d = `9400${g.digits(18)}`
    const grouped = d.match(/.{1,4}/g)!.join(' ')
    for (let i = 4; i + 16 <= 20; i += 4) if (/^[3-6]/.test(d.slice(i)) && luhnValid(d.slice(i, i + 16))) return grouped
  }
}

const URL_NEGATIVES: Planter[] = [
  // addresses in a URL path: negatives until rules 1.2.3, labeled since (same draws)
  (g, r) => {
    const field = g.pick(['url', 'avatar'])
    sentence(g, r, field, [`https://cdn.example.com/u/`, ['email', urlEncodeAt(email(g))], `/avatar.png`])
  },
  (g, r) => sentence(g, r, 'link', [`https://app.example.com/login?next=https://sso.example.com/u/`, ['email', email(g)]]),
  (g, r) => put(r, g.pick(['note', 'status']), `tracking ${trackingWithCardWindow(g)}`),
  (g, r) => put(r, g.pick(['note', 'status']), `tracking 1Z${luhnComplete(`4${g.digits(14)}`)}`),
  (g, r) => put(r, 'note', `${g.pick(['ref', 'batch', 'lot'])} ${g.pick(['020 7946 0018', '030 12345678', '01 23 45 67 89', `0${g.int(1, 9)}${g.digits(2)} ${g.digits(4)} ${g.digits(4)}`])}`),
]

// --- sweep 17: addresses in URL paths (rules 1.2.3) -----------------------------------------
// Extra records after the URL records, from their own generator: an address that is a whole path
// segment, raw or %40-encoded, in a URL, a bare request path or a path inside a query; next to
// look-alikes that stay negatives (userinfo, asset names, package versions, handles).

export const PATH_CORPUS_SIZE = 400

const PATH_POSITIVES: Planter[] = [
  (g, r) => sentence(g, r, g.pick(['url', 'link', 'referrer']), [`https://${g.pick(['x.example', 'app.example.com', 'crm.example.org'])}/${g.pick(['users', 'u', 'accounts', 'members'])}/`, ['email', email(g)], g.pick(['', '/', '/profile', '/orders?page=2', '#settings'])]),
  (g, r) => sentence(g, r, g.pick(['url', 'path']), [`${g.pick(['https://x.example/u/', '/u/', '/api/v1/users/'])}`, ['email', urlEncodeAt(email(g))], g.pick(['', '/edit', '?tab=1'])]),
  (g, r) => sentence(g, r, g.pick(['log', 'request']), [`${g.pick(['GET', 'DELETE', 'PUT'])} /api/users/`, ['email', email(g)], `${g.pick(['', '/orders'])} HTTP/1.1 ${g.pick(['200', '404'])}`]),
  (g, r) => sentence(g, r, 'link', [`https://app.example.com/login?next=/u/`, ['email', email(g)], g.pick(['', '/home'])]),
  (g, r) => sentence(g, r, 'note', [`profile moved to https://x.example/people/`, ['email', email(g)], `. Thanks`]),
]

const PATH_NEGATIVES: Planter[] = [
  (g, r) => put(r, g.pick(['url', 'link']), `${g.pick(['https://', 'ftp://', '//'])}${email(g)}${g.pick(['/', '/inbox', ''])}`),
  (g, r) => put(r, g.pick(['url', 'asset']), `https://cdn.example.com/img/${g.pick(WORDS)}@${g.int(2, 3)}x.${g.pick(['png', 'webp', 'avif', 'svg'])}`),
  (g, r) => put(r, 'url', `https://cdn.example.net/npm/${g.pick(['bootstrap', 'react', 'lodash'])}@${g.int(1, 18)}.${g.int(0, 9)}.${g.int(0, 9)}/dist/index.min.js`),
  (g, r) => put(r, 'url', `https://medium.com/@${g.pick(FIRST)}.${g.pick(LAST)}/${g.pick(WORDS)}-${g.digits(6)}`),
  (g, r) => put(r, 'url', `https://files.example.org/reports/${g.pick(WORDS)}@q${g.int(1, 4)}.${g.pick(['xlsx', 'docx', 'csv', 'pdf'])}`),
  (g, r) => put(r, 'note', `push to ${g.pick(['git', 'deploy'])}@${g.pick(['github.com', 'git.example.com'])}/${g.pick(WORDS)}/${g.pick(WORDS)}`),
]

export function generateCorpus(seed = CORPUS_SEED, size = CORPUS_SIZE): CorpusRecord[] {
  const g = new Gen(seed)
  const records: CorpusRecord[] = []
  for (let id = 1; id <= size; id++) {
    const rec: CorpusRecord = { id, fields: { id: String(id), name: `${g.pick(FIRST)} ${g.pick(LAST)}`, updated: neutral(g) }, labels: [], hardNegatives: 0 }
    const positives = g.int(0, 2)
    for (let i = 0; i < positives; i++) g.pick(POSITIVES)(g, rec)
    const negatives = g.int(positives === 0 ? 1 : 0, 2)
    for (let i = 0; i < negatives; i++) {
      const before = JSON.stringify(rec.fields)
      g.pick(NEGATIVES)(g, rec)
      if (JSON.stringify(rec.fields) !== before) rec.hardNegatives++
    }
    // A later planter may overwrite a field: keep only labels whose text is still there.
    rec.labels = rec.labels.filter((l) => rec.fields[l.field]?.includes(l.value))
    records.push(rec)
  }
  const u = new Gen(seed ^ 0x15)
  for (let id = size + 1; id <= size + URL_CORPUS_SIZE; id++) {
    const rec: CorpusRecord = { id, fields: { id: String(id), name: `${u.pick(FIRST)} ${u.pick(LAST)}` }, labels: [], hardNegatives: 0 }
    u.pick(URL_POSITIVES)(u, rec)
    const before = JSON.stringify(rec.fields)
    u.pick(URL_NEGATIVES)(u, rec)
    if (JSON.stringify(rec.fields) !== before) rec.hardNegatives++
    rec.labels = rec.labels.filter((l) => rec.fields[l.field]?.includes(l.value))
    records.push(rec)
  }
  const p = new Gen(seed ^ 0x17)
  for (let id = size + URL_CORPUS_SIZE + 1; id <= size + URL_CORPUS_SIZE + PATH_CORPUS_SIZE; id++) {
    const rec: CorpusRecord = { id, fields: { id: String(id), name: `${p.pick(FIRST)} ${p.pick(LAST)}` }, labels: [], hardNegatives: 0 }
    p.pick(PATH_POSITIVES)(p, rec)
    const before = JSON.stringify(rec.fields)
    p.pick(PATH_NEGATIVES)(p, rec)
    if (JSON.stringify(rec.fields) !== before) rec.hardNegatives++
    rec.labels = rec.labels.filter((l) => rec.fields[l.field]?.includes(l.value))
    records.push(rec)
  }
  return records
}
