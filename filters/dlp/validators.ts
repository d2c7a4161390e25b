// The checks a rule pack names by string ("validator": "luhn"): what a regular expression
// cannot say (checksums, number plans, reserved ranges). Pure functions of the candidate and
// the text around it, so they are tested and evaluated without sockets.
//
// What is detected is ASCII-shaped numbers (digits 0-9, ASCII separators: space, "-", ".", "()")
// and e-mail addresses (Unicode letters of the common scripts allowed: jörg@bücher.de). Look-alikes are not: full-width or other-script digits
// ("１２３-４５-６７８９", "١٢٣-٤٥-٦٧٨٩"), a non-breaking space or hyphen (U+00A0, U+2011) as a
// separator, and zero-width or soft-hyphen characters inside a value ("ada\u200d@example.com")
// pass as text. Catching them takes normalizing the string (NFKC, format characters removed)
// before the rules run, with offsets mapped back: the scanner's job, not a validator's.
import { isIPv4, isIPv6 } from 'node:net'
import { parsePhoneNumberFromString, type CountryCode } from 'libphonenumber-js/max'
import { GenerationalMemo } from './generational-memo.ts'

/** A candidate found by a rule's pattern: text[start, end). */
export type Validator = (text: string, start: number, end: number) => boolean

/** Relaxed whole-value checks used when the field name says what the value is. */
export type FieldValidator = (value: string) => boolean

// --- e-mail ---------------------------------------------------------------------------------

// Asset suffixes that follow "@" in file names such as logo@2x.png; never a top-level domain
// anyone mails to (png, js … are not delegated TLDs).
// File extensions that are no delegated TLD either: an asset name in a URL path ("hero@2x.avif",
// "report@q3.xlsx") is now read as a path segment, where an address may stand.
const NOT_TLDS = new Set(['png', 'jpg', 'jpeg', 'gif', 'svg', 'webp', 'ico', 'bmp', 'tif', 'tiff', 'css', 'js', 'mjs', 'ts', 'map', 'json', 'html', 'htm', 'php', 'txt', 'pdf', 'zip', 'mp4', 'mp3', 'woff', 'woff2',
  'avif', 'heic', 'heif', 'apng', 'svgz', 'webm', 'mkv', 'avi', 'wav', 'ogg', 'flac', 'ttf', 'otf', 'eot', 'wasm', 'cjs', 'mts', 'cts', 'jsx', 'tsx', 'scss', 'less', 'vue', 'xml', 'yaml', 'yml', 'toml', 'csv', 'tsv', 'doc', 'docx', 'xls', 'xlsx', 'ppt', 'pptx', 'odt', 'ods', 'rtf', 'epub', 'tgz', 'gz', 'tar', 'rar', 'jar', 'war', 'log'])

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 34 || c === 39 || c === 60 || c === 62
}

// Where a candidate sits (see urlPlace).
const FREE = 0
const REFUSED = 1
const SEGMENT = 2

/**
 * Where a candidate at text[start] sits in the whitespace-delimited token before it:
 * - REFUSED: in a URL's authority ("https://jane@example.com/" is userinfo, "//jane@x.com/" too),
 *   or in a URL elsewhere than after a separator that starts a value;
 * - SEGMENT: a whole path segment, in a URL or a bare path ("https://x.example/users/jane@corp.com/
 *   profile", "GET /u/jane%40corp.com HTTP/1.1", "?next=/u/jane@corp.com"): an address, which may be
 *   followed by "/";
 * - FREE: anywhere else, including a query or fragment value ("https://x.example/u?email=jane@corp.com&x=1",
 *   "…?to=mailto:jane@corp.com", "#/u?e=jane@corp.com").
 */
function urlPlace(text: string, start: number): number {
  // An escape before the candidate is the character it encodes: a URL inside a query value
  // ("?next=%2Fu%3Femail%3Djane%40corp.com", a login redirect) spells its "=" "%3D".
  const prev = charBefore(text, start)
  // "/" starts a path segment, unless "//" starts an authority
  if (prev === 47) return charBefore(text, charStart(text, start)) === 47 ? REFUSED : SEGMENT
  // The token is read back at most URL_WINDOW characters: a list of addresses joined without
  // spaces ("a@x.com,b@y.com,…", a recipients field) was read back to its start for each one,
  // quadratic (1 MiB: a minute, the worker killed). A URL whose scheme lies further back counts
  // as none: the address is found (masked rather than left readable).
  const from = Math.max(0, start - URL_WINDOW)
  // Candidates of one value come left to right: read back only to the previous one's start.
  const known = text === walkText && walkEnd <= start && walkEnd > from
  const stop = known ? walkEnd : from
  let i = start - 1
  while (i >= stop && !isSpace(text.charCodeAt(i))) i--
  if (known && i < stop) i = Math.max(walkStart, from) - 1
  walkText = text
  walkEnd = start
  walkStart = i + 1
  const token = text.slice(i + 1, start)
  const scheme = token.indexOf('://')
  if (scheme === -1 && !token.startsWith('www.')) return FREE
  // the query or fragment of the (outermost) URL
  const q = token.search(/[?#]/)
  if (q !== -1 && q > scheme) {
    // "=" "&" "?" "#" ";" "," start a value or list item; ":" ends "mailto:"
    return prev === 61 || prev === 38 || prev === 63 || prev === 35 || prev === 59 || prev === 44 || (prev === 58 && /mailto:$/i.test(token)) ? FREE : REFUSED
  }
  // the authority runs to the first "/" after "://"; in the path, "=" ";" "," start a value
  // ("/search/email=jane@corp.com", "/compare/a@x.com,b@y.com")
  if (token.indexOf('/', scheme === -1 ? 0 : scheme + 3) === -1) return REFUSED
  return prev === 61 || prev === 59 || prev === 44 ? SEGMENT : REFUSED
}

/** Where the character that ends at text[end] starts: a percent-escape ("%3D", or "%253D" encoded twice) is one. */
function charStart(text: string, end: number): number {
  if (end < 3 || !isHex(text.charCodeAt(end - 1)) || !isHex(text.charCodeAt(end - 2))) return end - 1
  if (text.charCodeAt(end - 3) === 37) return end - 3
  return end >= 5 && text.charCodeAt(end - 5) === 37 && text.charCodeAt(end - 4) === 50 && text.charCodeAt(end - 3) === 53 ? end - 5 : end - 1
}

/** The character that ends at text[end], an escape decoded (NaN: none). */
function charBefore(text: string, end: number): number {
  return charStart(text, end) === end - 1 ? text.charCodeAt(end - 1) : parseInt(text.slice(end - 2, end), 16)
}

/** The character that starts at text[start], an escape ("%2F", "%252F") decoded (NaN: none). */
function charAt(text: string, start: number): number {
  const c = text.charCodeAt(start)
  if (c !== 37) return c
  const h = text.charCodeAt(start + 1) === 50 && text.charCodeAt(start + 2) === 53 && isHex(text.charCodeAt(start + 3)) && isHex(text.charCodeAt(start + 4)) ? start + 3 : start + 1
  return isHex(text.charCodeAt(h)) && isHex(text.charCodeAt(h + 1)) ? parseInt(text.slice(h, h + 2), 16) : c
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 102)
}

// A percent-escaped URL delimiter (= & ? # / : ; , space), once or twice encoded: an address's
// local part holds none, so a candidate across one ("u%3Femail%3Djane%40corp.com") is the URL
// around the address, which is found where it starts.
const ESCAPED_DELIMITER = /%(?:25)?(?:3[ABDFabdf]|2[0367CFcf])/

// How far back urlPlace looks for the URL a candidate sits in (browsers keep URLs to ~2 KB).
const URL_WINDOW = 2048
// The last candidate urlPlace read back from: its text, its start and where its token starts.
let walkText = ''
let walkEnd = 0
let walkStart = 0

// Longest entry of NOT_TLDS: a longer TLD needs no lookup.
const NOT_TLD_MAX = Math.max(...[...NOT_TLDS].map((t) => t.length))

/** The e-mail checks; the at-sign ("@", or "%40" percent-encoded) starts at text[at]. */
function emailAt(text: string, start: number, end: number, at: number): boolean {
  if (at === -1 || at >= end) return false
  // the last "." of the match (a "." right after it ends the sentence: "see logo@2x.png.")
  const dot = text.lastIndexOf('.', end - 1)
  if (end - dot - 1 <= NOT_TLD_MAX && NOT_TLDS.has(text.slice(dot + 1, end).toLowerCase())) return false
  // the local part text[start, at) neither starts nor ends with "." nor holds ".."
  if (at > start && (text.charCodeAt(start) === 46 || text.charCodeAt(at - 1) === 46)) return false
  // Searched in the local part only: a search on into the rest of the value, for every address
  // of a long list, was quadratic (1 MiB of addresses: 14 s).
  const local = text.slice(start, at)
  if (local.includes('..') || ESCAPED_DELIMITER.test(local)) return false
  // "https://jane@example.com/x" is userinfo, not an address; "https://x.example/u/jane@corp.com/x" one.
  const place = urlPlace(text, start)
  if (place === REFUSED) return false
  // In an encoded URL (an escape before the address, or its "%40") an escape after it is the
  // character it encodes ("%2Fu%2Fjane%40corp.com%2Fedit"); in a plain one it is part of the name.
  const next = text.charCodeAt(at) === 37 || charStart(text, start) !== start - 1 ? charAt(text, end) : text.charCodeAt(end)
  if (place === SEGMENT) {
    // the whole segment: "/u/jane@corp.com_old/" or "/jane@corp.com%2F…" is some other name
    if (!(next !== next || isSpace(next) || next === 47 || next === 63 || next === 35 || next === 59 || next === 38 || next === 44 || next === 46 || next === 41 || next === 93 || next === 124)) return false
  } else if (next === 47) return false // "a@b.com/path", "git@github.com/org/repo"
  // "git@github.com:org/repo.git", "deploy@host.example.com:/srv": an scp-style remote (user@host:path)
  return next !== 58 || text.charCodeAt(end) !== 58 || !isPathStart(text.charCodeAt(end + 1))
}

const email: Validator = (text, start, end) => emailAt(text, start, end, text.indexOf('@', start))

/**
 * "jane.doe%40corp.com": an address percent-encoded in a URL's query or a form body
 * ("?email=jane.doe%40corp.com", "email=jane%40corp.com&x=1"); the "%40" is the at-sign.
 */
const emailUrlencoded: Validator = (text, start, end) => {
  // "%2540": encoded twice (a URL inside a query value). Searched in the match only: the first
  // escape is the at-sign, the local part holds no "%40".
  const at = ENCODED_AT.exec(text.slice(start, end))
  return at !== null && emailAt(text, start, end, start + at.index)
}
const ENCODED_AT = /%(?:25)?40/

/**
 * "user@[192.168.1.1]", "ops@[IPv6:2001:db8::1]": an address literal for a domain (RFC 5321).
 * Read as an IPv4 address alone, the mailbox before it ("user@") was left readable.
 */
const emailLiteral: Validator = (text, start, end) => {
  const at = text.indexOf('@', start)
  if (at === -1 || at >= end) return false
  const inner = text.slice(at + 2, end - 1)
  return (/^ipv6:/i.test(inner) ? isIPv6(inner.slice(5)) : isIPv4(inner)) && emailAt(text, start, end, at)
}

function isPathStart(c: number): boolean {
  return (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 122) || c === 47 || c === 126 || c === 46 || c === 95
}

const emailField: FieldValidator = (value) => {
  const v = value.trim()
  return EMAIL_WHOLE.test(v) && email(v, 0, v.length)
}
// The rule's shape, whole: a dot-atom local part (RFC 5322 atext as addresses use it: letters, digits,
// . _ % + - and the apostrophe of o'brien@, ! $ & ^ ~ inside it: sales&marketing@; "_" may start it: _ops@,
// _dmarc-reports@) or a quoted one ("john doe"@), a letter or punycode TLD.
const EMAIL_WHOLE = /^(?:mailto:)?(?:[A-Za-z0-9_][A-Za-z0-9._%+'!$&^~-]{0,63}|"[^"\\\r\n@]{1,62}")@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9]{1,59})$/

// --- phone ----------------------------------------------------------------------------------

// libphonenumber-js costs a few microseconds per number; exports repeat numbers (one customer,
// many rows), so verdicts are memoized: null = not a valid number, else the number in E.164 (what
// tokens and hashes are computed over) and its mask ("+<cc>*******<last four>", what the mask
// action writes; kept here so masking a number allocates nothing).
// Bounded: 64k short strings per worker thread.
interface PhoneVerdict {
  readonly e164: string
  readonly mask: string
}
const phoneVerdicts = new GenerationalMemo<PhoneVerdict | null>(65_536)
let defaultRegion: CountryCode = 'US'

/** Region used to read national formats ("(202) 555-0143") under a phone field or context word. */
export function setDefaultPhoneRegion(region: string): void {
  defaultRegion = region as CountryCode
  phoneVerdicts.clear()
  lastCandidate = ''
}

// The last verdict: masking a phone asks again for the value it just validated.
let lastCandidate = ''
let lastNational = false
let lastRegion = ''
let lastVerdict: PhoneVerdict | null = null

function phoneVerdict(candidate: string, national: boolean, region: CountryCode = defaultRegion): PhoneVerdict | null {
  if (candidate === lastCandidate && national === lastNational && region === lastRegion && candidate !== '') return lastVerdict
  const v = memoizedPhoneVerdict(candidate, national, region)
  lastCandidate = candidate
  lastNational = national
  lastRegion = region
  lastVerdict = v
  return v
}

function memoizedPhoneVerdict(candidate: string, national: boolean, region: CountryCode): PhoneVerdict | null {
  const key = national ? `n${region}:${candidate}` : candidate
  let v = phoneVerdicts.get(key)
  if (v === undefined) {
    const p = national ? parsePhoneNumberFromString(candidate, { defaultCountry: region, extract: false }) : parsePhoneNumberFromString(candidate, { extract: false })
    v = p !== undefined && p.isValid() ? { e164: p.number, mask: `+${p.countryCallingCode}*******${p.nationalNumber.slice(-4)}` } : null
    phoneVerdicts.set(key, v)
  }
  return v
}

const phone: Validator = (text, start, end) => phoneVerdict(text.slice(start, end), false) !== null
const phoneNational: Validator = (text, start, end) => nationalVerdict(text.slice(start, end)) !== null
/** "tel=%2B14155550123": an E.164 number percent-encoded in a URL's query or a form body ("%2B" is its "+"). */
const phoneUrlencoded: Validator = (text, start, end) => phoneVerdict(urlDecodedPhone(text.slice(start, end)), false) !== null

// "%2B" or "%252B" (encoded twice: a URL inside a query value) before a percent-encoded number.
const ENCODED_PLUS = /^%(?:25)?2b/i

/**
 * A percent-encoded number as written in text: "%2B1%20415%20555%200100" (encodeURIComponent),
 * "%2B1+%28415%29+555-0100" (a form body: "+" is a space), "%252B…" (encoded twice). Read only
 * as far as the rule's pattern allows (spaces, brackets, "." "-").
 */
function urlDecodedPhone(v: string): string {
  const prefix = ENCODED_PLUS.exec(v)![0].length
  return `+${v.slice(prefix).replace(/%(?:25)?(2[089])|\+/g, (_, h: string | undefined) => (h === undefined ? ' ' : String.fromCharCode(parseInt(h, 16))))}`
}

/**
 * A number in text after a context word: national in `dlp.phoneRegion`, else after the `00`
 * international prefix ("call 0044 20 7946 0018"). 00 is the prefix of most of the world, but
 * not of the US or Canada (011), Japan or Australia, so read in those regions such a number was
 * taken as a national one, invalid, and left readable.
 */
function nationalVerdict(v: string): PhoneVerdict | null {
  const national = phoneVerdict(v, true)
  if (national !== null || !v.startsWith('00')) return national
  return phoneVerdict(`+${v.slice(2)}`, false)
}
const phoneField: FieldValidator = (value) => {
  const v = value.trim()
  if (v.length < 7 || v.length > 32 || !/^[+\d().\s-]+$/.test(v)) return false
  return fieldPhoneVerdict(v) !== null
}

/**
 * A phone field's value: with `+`, international; else national in `dlp.phoneRegion`, else
 * international written without its `+` — an MSISDN (`447911123456`: E.164 digits, the form
 * telecom systems and many databases store) or after the `00` international prefix
 * (`0044 7911 123456`). Read nationally only, every number of another country under a
 * `msisdn` or `phone` field went out readable.
 */
function fieldPhoneVerdict(v: string, region: CountryCode = defaultRegion): PhoneVerdict | null {
  if (v.charCodeAt(0) === 43) return phoneVerdict(v, false)
  if (ENCODED_PLUS.test(v)) return phoneVerdict(urlDecodedPhone(v), false)
  const national = phoneVerdict(v, true, region)
  if (national !== null) return national
  // "0049 (0)30 12345678": the 00 prefix, then the trunk zero in brackets as "+49 (0)30 …" has
  // it; the brackets made it a national format below, and it left readable.
  if (v.startsWith('00') && v.includes('(')) return phoneVerdict(`+${v.slice(2)}`, false)
  let digits = ''
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (c >= 48 && c <= 57) digits += v[i]
    else if (c !== 32 && c !== 45 && c !== 46) return null // parentheses: a national format
  }
  if (digits.startsWith('00')) digits = digits.slice(2)
  else if (digits.charCodeAt(0) === 48) return null // a trunk prefix: national, and not valid there
  if (digits.length < 8 || digits.length > 15) return null
  return phoneVerdict(`+${digits}`, false)
}

/** "+1*******0123" (country calling code and the last four digits), or undefined: not a valid number. */
export function phoneMask(value: string): string | undefined {
  const v = value.trim()
  const verdict = fieldPhoneVerdict(v)
  if (verdict === null) return undefined
  // A percent-encoded number keeps its encoding: a bare "+" in a query string reads as a space.
  const encoded = ENCODED_PLUS.exec(v)
  return encoded !== null ? `${encoded[0]}${verdict.mask.slice(1)}` : verdict.mask
}

/**
 * A phone number found by any phone rule, in E.164 ("+14155550143"), or undefined: not a valid
 * number. However it was written (separators, brackets, %2B/%20-encoded, national in
 * `dlp.phoneRegion` (or `region`, the one the value was read in), 00-prefixed), one number is
 * one E.164 string.
 */
export function phoneE164(value: string, region?: string): string | undefined {
  return fieldPhoneVerdict(value.trim(), (region ?? defaultRegion) as CountryCode)?.e164
}

// --- SSN ------------------------------------------------------------------------------------

/** SSA rules: area 001-899 except 666, group 01-99, serial 0001-9999. */
export function ssnDigitsValid(d: string): boolean {
  if (d.length !== 9) return false
  const area = Number(d.slice(0, 3))
  const group = Number(d.slice(3, 5))
  const serial = Number(d.slice(5))
  return area !== 0 && area !== 666 && area < 900 && group !== 0 && serial !== 0
}

const ssn: Validator = (text, start, end) => ssnDigitsValid(digitsOf(text, start, end)) && wrappedAtSpace(text, start, end)
const ssnField: FieldValidator = (value) => {
  const v = value.trim()
  return /^\d{3}([-. ]?)\d{2}\1\d{4}$/.test(v) && ssnDigitsValid(digitsOf(v, 0, v.length))
}

// --- payment cards --------------------------------------------------------------------------

export function luhnValid(d: string): boolean {
  let sum = 0
  let double = false
  for (let i = d.length - 1; i >= 0; i--) {
    let n = d.charCodeAt(i) - 48
    if (double) {
      n *= 2
      if (n > 9) n -= 9
    }
    sum += n
    double = !double
  }
  return sum % 10 === 0
}

/**
 * Issuer prefixes (IIN ranges) and lengths of the networks in circulation, national schemes
 * included: without them a Mir, RuPay or Troy card left readable, even under a `cardNumber` field.
 */
function knownIssuer(d: string): boolean {
  const len = d.length
  const p2 = Number(d.slice(0, 2))
  const p3 = Number(d.slice(0, 3))
  const p4 = Number(d.slice(0, 4))
  if (d[0] === '4') return len === 13 || len === 16 || len === 19 // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return len === 16 // Mastercard
  if (p2 === 34 || p2 === 37) return len === 15 // Amex
  if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649)) return len >= 16 && len <= 19 // Discover
  if (p4 >= 3528 && p4 <= 3589) return len >= 16 && len <= 19 // JCB
  if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return len >= 14 && len <= 19 // Diners
  if (p2 === 62) return len >= 16 && len <= 19 // UnionPay
  if (p2 === 50 || (p2 >= 56 && p2 <= 69)) return len >= 12 && len <= 19 // Maestro
  if (p4 >= 2200 && p4 <= 2204) return len >= 16 && len <= 19 // Mir
  if (p2 === 81 || p2 === 82) return len === 16 // RuPay (its 60, 65, 508 and 353/356 ranges are above)
  if (p4 === 9792) return len === 16 // Troy
  return false
}

function cardDigitsValid(text: string, start: number, end: number): boolean {
  // One separator style per number: "4111 1111-1111 1111" is not how cards are written.
  const raw = text.slice(start, end)
  if (raw.includes(' ') && raw.includes('-')) return false
  const d = digitsOf(text, start, end)
  return d.length >= 12 && d.length <= 19 && knownIssuer(d) && luhnValid(d)
}
function isDigitAt(text: string, i: number): boolean {
  const c = text.charCodeAt(i)
  return c >= 48 && c <= 57
}

/**
 * A card number in text stands on its own, not inside a longer run of digit groups: a USPS
 * tracking number "9400 1112 0200 0000 0000 00" holds Luhn-valid 16-digit windows, which were
 * masked (or blocked the export) as cards. With `sep` the candidate's separator (" " or "-"; a
 * space for a compact number): refused when a group of 4+ digits and `sep` come right before it
 * (a card starts no such run; "05/2027 4111 …", an expiry year, still may), or when what follows
 * is `sep`, a group of 4+ digits and `sep` with another digit (two more groups: the run goes on;
 * one group after it is the CVV or expiry the scanner cuts off: "4111 1111 1111 1111 123").
 */
function cardStandsAlone(text: string, start: number, end: number): boolean {
  let sep = 32
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c === 32 || c === 45) {
      sep = c
      break
    }
  }
  if (start >= 2 && text.charCodeAt(start - 1) === sep && isDigitAt(text, start - 2)) {
    let i = start - 2
    while (i >= 0 && isDigitAt(text, i)) i--
    if (start - 2 - i >= 4 && text.charCodeAt(i) !== 47) return false
  }
  if (text.charCodeAt(end) === sep && isDigitAt(text, end + 1)) {
    let i = end + 1
    while (isDigitAt(text, i)) i++
    if (i - end - 1 >= 4 && text.charCodeAt(i) === sep && isDigitAt(text, i + 1)) return false
  }
  return true
}

const luhn: Validator = (text, start, end) => cardDigitsValid(text, start, end) && cardStandsAlone(text, start, end) && wrappedAtSpace(text, start, end)
const cardField: FieldValidator = (value) => {
  const v = value.trim()
  return /^\d(?:[ -]?\d){11,18}$/.test(v) && cardDigitsValid(v, 0, v.length)
}

// --- IBAN -----------------------------------------------------------------------------------

/**
 * Registered IBAN lengths by country (SWIFT IBAN registry, through the 2024 releases: Burundi,
 * Djibouti, Falklands, Honduras, Libya, Mongolia, Nicaragua, Oman, Russia, Somalia, Sudan and
 * Yemen joined from 2021 on; a country missing here lets its IBANs leave undetected).
 */
const IBAN_LENGTH: Record<string, number> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28, CH: 21, CR: 22, CY: 28,
  CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23,
  GL: 18, GR: 27, GT: 28, HN: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28,
  LC: 32, LI: 21, LT: 20, LU: 20, LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28,
  NL: 18, NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31, SD: 18, SE: 24,
  SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26, UA: 29, VA: 22, VG: 24, XK: 20, YE: 30,
}

export function ibanValid(compact: string): boolean {
  const len = IBAN_LENGTH[compact.slice(0, 2)]
  if (len === undefined || compact.length !== len) return false
  const rearranged = compact.slice(4) + compact.slice(0, 4)
  let rem = 0
  for (let i = 0; i < rearranged.length; i++) {
    const c = rearranged.charCodeAt(i)
    if (c >= 48 && c <= 57) rem = (rem * 10 + (c - 48)) % 97
    else if (c >= 65 && c <= 90) rem = (rem * 100 + (c - 55)) % 97
    else return false
  }
  return rem === 1
}

/**
 * Written in capitals or all in lower case (`de89 3704 …`, as typed into a form or lower-cased
 * by an export): the letters of one case. Mixed case is the look of a random base62/base64 id
 * (`Ab12xY…`), which would pass the checksum one time in 97.
 */
const iban: Validator = (text, start, end) => {
  const compact = text.slice(start, end).replace(/[ \r\n-]/g, '')
  const upper = compact.toUpperCase()
  return (compact === upper || compact === compact.toLowerCase()) && ibanValid(upper) && wrappedAtSpace(text, start, end)
}
// Groups of 4 with spaces or "-" (NL91-ABNA-0417-1643-00, as some banks print them).
const ibanField: FieldValidator = (value) => ibanValid(value.trim().replace(/[ -]/g, '').toUpperCase())

// --- IP addresses ---------------------------------------------------------------------------

// Browser product tokens of a User-Agent: "Chrome/131.0.0.0" (every Chromium browser's reduced UA
// since 2022) is a version that parses as an address. A host name before "/" ("localhost/127.0.0.1",
// Java's InetAddress) is not one of these and stays an address.
const UA_PRODUCTS = new Set(['chrome', 'chromium', 'headlesschrome', 'crios', 'edg', 'edga', 'edgios', 'opr', 'opt', 'yabrowser', 'samsungbrowser', 'ucbrowser', 'version', 'electron', 'firefox', 'fxios', 'safari', 'vivaldi', 'brave'])

function afterUaProduct(text: string, start: number): boolean {
  if (start < 2 || text.charCodeAt(start - 1) !== 47) return false
  let i = start - 2
  while (i >= 0 && (text.charCodeAt(i) | 0x20) >= 97 && (text.charCodeAt(i) | 0x20) <= 122) i--
  return start - 2 - i <= 14 && UA_PRODUCTS.has(text.slice(i + 1, start - 1).toLowerCase())
}

/** "v1.2.3.4", "app-v1.0.0.0": a version tag (a "v" that starts a word), not an address. */
function afterVersionTag(text: string, start: number): boolean {
  if (start < 1 || (text.charCodeAt(start - 1) | 0x20) !== 118) return false
  const c = text.charCodeAt(start - 2) | 0x20
  return !((c >= 97 && c <= 122) || (c >= 48 && c <= 57))
}

const ipv4: Validator = (text, start, end) => isIPv4(text.slice(start, end)) && !afterUaProduct(text, start) && !afterVersionTag(text, start)
const MIXED_CASE_GROUP = /[A-F][0-9A-Fa-f]*[a-f]|[a-f][0-9A-Fa-f]*[A-F]/
const ipv6: Validator = (text, start, end) => {
  const s = text.slice(start, end)
  // A hex digit on each side of "::" or three groups: "a::" alone is too thin to call an address.
  // Words of hex letters around a scope operator ("Add::Bad", "Cafe::Bead") pass node:net: without
  // a digit, a group that mixes cases is a capitalized word (addresses keep one case per group,
  // RFC 5952 lower; "Fe80::1" and "2001:db8::Dead:Beef" still hold digits).
  return s.length >= 3 && /[0-9A-Fa-f]/.test(s) && isIPv6(s) && s !== '::' && (/\d/.test(s) || !MIXED_CASE_GROUP.test(s))
}
const ipv4Field: FieldValidator = (value) => isIPv4(value.trim())
const ipv6Field: FieldValidator = (value) => {
  const v = value.trim()
  return ipv6(v, 0, v.length)
}

// --- registry -------------------------------------------------------------------------------

/**
 * A grouped number hard-wrapped in text ("4111 1111 1111\n1111", "SSN 123 45\n6789"): text
 * wrapped to a width breaks lines at spaces, so a line break may stand for one space of a number
 * written with spaces — once, and never in a number written with "-" or without separators
 * (digits on two lines are two values there). Before, a wrapped value left readable.
 */
function wrappedAtSpace(text: string, start: number, end: number): boolean {
  let breaks = 0
  let at = -1
  let spaces = 0
  let hyphen = false
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c === 10) {
      breaks++
      at = i
    } else if (c === 45) hyphen = true
    else if (c === 32 && text.charCodeAt(i + 1) !== 10 && text.charCodeAt(i + 1) !== 13) spaces++
  }
  if (breaks === 0) return true
  if (breaks !== 1 || spaces === 0 || hyphen) return false
  // The break stands for a space between two groups (a card's are at most 6 digits, Amex's
  // 4-6-5): a compact run beside it is a token of its own ("ref 4000123412341008\n1 05 2027", a
  // 16-digit reference above a date, was joined into a 19-digit "card" by the spaces below it).
  let before = at - 1
  while (before >= start && (text.charCodeAt(before) === 13 || text.charCodeAt(before) === 32)) before--
  let b = before
  while (b >= start && text.charCodeAt(b) !== 32) b--
  let a = at + 1
  while (a < end && text.charCodeAt(a) !== 32) a++
  return before - b <= MAX_GROUP && a - at - 1 <= MAX_GROUP
}
// Longest group of a number written with spaces (Amex, Diners: 6 digits).
const MAX_GROUP = 6

function digitsOf(text: string, start: number, end: number): string {
  let d = ''
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c >= 48 && c <= 57) d += text[i]
  }
  return d
}

export const VALIDATORS: Record<string, Validator> = {
  email,
  email_urlencoded: emailUrlencoded,
  email_literal: emailLiteral,
  phone,
  phone_national: phoneNational,
  phone_urlencoded: phoneUrlencoded,
  ssn_us: ssn,
  luhn,
  iban,
  ipv4,
  ipv6,
}

/** Whole-value validators by type, for values under a field name of that type. */
export const FIELD_VALIDATORS: Record<string, FieldValidator> = {
  email: emailField,
  phone_e164: phoneField,
  ssn_us: ssnField,
  credit_card: cardField,
  iban: ibanField,
  ipv4: ipv4Field,
  ipv6: ipv6Field,
}
