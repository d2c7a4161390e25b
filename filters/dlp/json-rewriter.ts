// A resumable JSON lexer that rewrites string values in place and copies every other byte as
// it came: numbers keep their exact digits (no float round trip for 20-digit ids), key order and
// whitespace stay, so an export that needs no change leaves byte for byte identical. It checks
// the grammar outside strings (a bare `123-45-6789` is an error, not a number to let through),
// holds only the token it is in the middle of, and knows the key path of each value so GraphQL
// response paths can scope the rewrite. One top-level value (JSON) or a sequence (NDJSON).
//
// Why not a library: JSON.parse + stringify changes numbers and buffers whole documents;
// stream-json and @streamparser/json emit one object per token (and parse numbers to floats),
// several times slower than this loop, which finds string ends with indexOf.

export class JsonSyntaxError extends Error {}

/**
 * JSON.stringify of a string. Replacements (masks, tokens) rarely need an escape, and
 * JSON.stringify costs ~50 ns for a short string where a scan and two quotes cost a few.
 */
export function jsonString(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    // what JSON.stringify escapes: control characters, quote, backslash, lone surrogates
    if (c < 0x20 || c === 34 || c === 92 || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(s)
  }
  return '"' + s + '"'
}

/** A replacement computed later, in a batch (a token): `value` is final once flush() returned. */
export interface DeferredString {
  readonly value: string
}

/** What happens to each string value. */
export interface StringVisitor {
  /** The replacement (a string, or a deferred one made only of JSON-safe characters), or undefined. */
  visit(value: string, hint: number): string | DeferredString | undefined
  /** Complete every DeferredString handed out so far; called before output is taken. */
  flush?(): void
  /**
   * Findings so far (anything a rule matched, acted on or not). A key is remembered by position
   * (and not visited again) only when visiting it found nothing, so counts stay exact.
   */
  readonly hits?: number
  /** Values shorter than this are never replaced, whatever their hint. */
  readonly minLength?: number
}

/** Most paths a scope tracks (a 31-bit mask per level); a scope with more is the whole document. */
export const MAX_SCOPE_PATHS = 31

/** Response-path scoping: only strings under one of `paths` are visited (absent: all). */
export interface JsonScope {
  /** Key paths from the root, e.g. [["data", "entities"], ["errors"]]; arrays are transparent. */
  paths: readonly (readonly string[])[]
}

export interface JsonRewriterOptions {
  /** true: NDJSON (any number of top-level values); false: exactly one value. */
  multi: boolean
  /** Field-name hint (bit mask) for a key. */
  hintOf(key: string): number
  scope?: JsonScope | undefined
  /** Longest single token (string or number) held while waiting for its end. */
  maxTokenChars: number
  /** Most nesting levels accepted. */
  maxDepth?: number
  /**
   * multi: longest record (characters) held while waiting for its end. A record's output leaves
   * only when the record is complete (a block must never leave half a record), so without a
   * bound one endless line was held whole: one upstream reply could take the worker's memory.
   */
  maxRecordChars?: number
  /**
   * Called where output may be released: after each top-level value (multi) or at the end of each
   * write (single). Returning false discards the unreleased output and stops the rewriter.
   */
  checkpoint(): boolean
}

// What the lexer expects next.
const EXPECT_VALUE = 0
const EXPECT_VALUE_OR_CLOSE = 1 // right after "["
const EXPECT_KEY_OR_CLOSE = 2 // right after "{"
const EXPECT_KEY = 3 // after "," in an object
const EXPECT_COLON = 4
const EXPECT_COMMA_OR_CLOSE = 5
const EXPECT_END = 6 // after the top-level value (single mode)

const OBJ = 0
const ARR = 1
const FULL = -1 // scope: everything below is in scope

const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/
const SCALED = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d{1,4}))?$/

/**
 * The integer a JSON number written with a fraction or an exponent stands for, as a client's
 * parser reads it: Jackson writes a double SSN as `1.23456789E8`, Python a float one as
 * `123456789.0`. Read as written, neither looked like the value it is. Undefined for a plain
 * integer, a number with a fractional part, or one far longer than any value a rule reads.
 */
function integerOf(word: string): string | undefined {
  const m = SCALED.exec(word)
  if (m === null || (m[3] === undefined && m[4] === undefined)) return undefined
  const digits = m[2]! + (m[3] ?? '')
  const point = m[2]!.length + Number(m[4] ?? 0)
  if (point > 40 || /[1-9]/.test(digits.slice(Math.max(point, 0)))) return undefined
  const int = point >= digits.length ? digits + '0'.repeat(point - digits.length) : digits.slice(0, Math.max(point, 0))
  return m[1]! + (int.replace(/^0+/, '') || '0')
}

// Key memo by position: records of an export repeat their keys in the same order, so the k-th
// key of an object at depth d is remembered (for d < KEY_DEPTHS, k < KEY_SLOTS, keys up to
// KEY_MAX_CHARS without escapes). A key that matches it in place needs no slice and no hint
// lookup.
const KEY_DEPTHS = 8
const KEY_SLOTS = 32
const KEY_MAX_CHARS = 256

// Name/value pairs (EAV and key-value exports: CRM custom fields, form submissions, AWS tags,
// GA4 event_params, FHIR identifiers): {"name":"ssn","value":"123456789"}. The field name sits
// in a sibling member, so a `value` member takes the field-name hints of its object's naming
// member, and of the key holding the object ({"phone":{"value":…}}, {"phones":[{"value":…}]}).
export const PAIR_NAME = 1
export const PAIR_VALUE = 2
const PAIR_WORDS: readonly [number, readonly string[]][] = [
  [PAIR_NAME, ['name', 'key', 'field', 'fieldname', 'fieldkey', 'attribute', 'attributename', 'attr', 'property', 'propertyname', 'label', 'type', 'system']],
  [PAIR_VALUE, ['value', 'values', 'val', 'fieldvalue', 'attributevalue', 'propertyvalue']],
]
const PAIR_ROLES: ReadonlyMap<string, number> = new Map(PAIR_WORDS.flatMap(([role, words]) => words.map((w) => [w, role] as const)))
/** A naming member's value longer than this names no field (it is data). */
export const PAIR_NAME_MAX_CHARS = 256
/**
 * How far (characters) after a pair's value its naming member may come ({"value":…,"name":…}):
 * the value's output is held until then, and a stream must not hold output without bound.
 */
export const PAIR_REACH_CHARS = 65_536

/**
 * The role of a member in a name/value pair: PAIR_NAME, PAIR_VALUE or 0. Compared like field
 * names: case, `_`, `-` and spaces do not count (`Key`, `field_name`, `Field Value`).
 */
export function pairRole(key: string): number {
  if (key.length > 24) return 0
  const r = PAIR_ROLES.get(key)
  if (r !== undefined) return r
  return PAIR_ROLES.get(key.toLowerCase().replace(/[^a-z0-9]/g, '')) ?? 0
}

/**
 * A pair's value read before the member that names it ({"value":"123456789","name":"ssn"}): its
 * output is held (nothing after it is released) until the name comes or its object ends.
 */
class HeldValue implements DeferredString {
  /** The value as written (JSON text), and what the visitor reads. */
  readonly raw: string
  readonly text: string
  /** Where it ended (characters from the start of the input) and the depth of its object. */
  readonly end: number
  readonly depth: number
  /** The hints it was read with. */
  readonly hint: number
  /** Its index in the output pieces. */
  index: number
  replacement: string | DeferredString | undefined = undefined
  constructor(raw: string, text: string, hint: number, end: number, depth: number, index: number) {
    this.raw = raw
    this.text = text
    this.hint = hint
    this.end = end
    this.depth = depth
    this.index = index
  }
  get value(): string {
    const r = this.replacement
    return r === undefined ? this.raw : typeof r === 'string' ? jsonString(r) : `"${r.value}"`
  }
}

export class JsonRewriter {
  readonly #o: JsonRewriterOptions
  readonly #visitor: StringVisitor
  readonly #paths: readonly (readonly string[])[]
  readonly #maxDepth: number
  #expect = EXPECT_VALUE
  // Frame stack, parallel arrays: container type, hint of values (objects: of the current key;
  // arrays: inherited from the key holding the array), scope state and key level.
  #depth = 0
  readonly #type: number[] = []
  readonly #hint: number[] = []
  readonly #scope: number[] = []
  readonly #level: number[] = []
  // The value about to be read (set by a key, inherited by array elements).
  #valHint = 0
  #valScope = FULL
  #valLevel = 0
  /** The member about to be read is a pair's name or value (PAIR_NAME, PAIR_VALUE, 0). */
  #valRole = 0
  /** Per open object: its naming member's value (the first), its held value, hints its members inherit (the object is a pair's value). */
  readonly #pairName: (string | undefined)[] = []
  readonly #pairHeld: (HeldValue | undefined)[] = []
  readonly #inherit: number[] = []
  /** Held values not settled yet, outermost first (their pieces are not released). */
  #held: HeldValue[] = []
  /** Keys seen so far in the object open at each depth. */
  readonly #keyOrdinal: number[] = []
  /** Rewritten keys written so far in the object open at each depth (none yet: undefined). */
  readonly #keysOut: (Set<string> | undefined)[] = []
  readonly #keyText: (string | undefined)[] = new Array<string | undefined>(KEY_DEPTHS * KEY_SLOTS).fill(undefined)
  readonly #keyHint = new Int32Array(KEY_DEPTHS * KEY_SLOTS)
  readonly #keyRole = new Int8Array(KEY_DEPTHS * KEY_SLOTS)
  #carry = ''
  /** Output pieces: the first #releasedCount are released, the rest belong to the record in progress. */
  #pieces: (string | DeferredString)[] = []
  #releasedCount = 0
  /** #pieces may hold DeferredStrings. */
  #deferred = false
  #stopped = false
  #values = 0
  #consumed = 0
  /** Where the record in progress started (characters from the start of the input; multi). */
  #recordFrom = 0

  constructor(visitor: StringVisitor, opts: JsonRewriterOptions) {
    this.#visitor = visitor
    this.#o = opts
    this.#paths = opts.scope?.paths ?? []
    this.#maxDepth = opts.maxDepth ?? 512
    this.#resetTop()
  }

  /** Top-level values completed so far (records, for NDJSON). */
  get values(): number {
    return this.#values
  }

  get stopped(): boolean {
    return this.#stopped
  }

  /** Output released so far and not yet taken. */
  take(): string {
    const all = this.#pieces
    const n = this.#releasedCount
    if (n === 0) return ''
    if (this.#deferred) {
      this.#visitor.flush?.()
      let left = false
      for (let i = 0; i < all.length; i++) {
        const p = all[i]!
        if (typeof p === 'string') continue
        if (i < n) all[i] = p.value
        else left = true // the record in progress: its turn comes when it is released
      }
      this.#deferred = left
    }
    let out: string
    if (n === all.length) {
      out = n === 1 ? (all[0] as string) : all.join('')
      this.#pieces = []
    } else {
      const rest = all.slice(n)
      all.length = n
      out = all.join('')
      this.#pieces = rest
      for (const h of this.#held) h.index -= n
    }
    this.#releasedCount = 0
    return out
  }

  #resetTop(): void {
    const n = this.#paths.length
    this.#valScope = n === 0 ? FULL : n >= MAX_SCOPE_PATHS ? 0x7fffffff : (1 << n) - 1
    this.#valLevel = 0
    this.#valHint = 0
  }

  #release(): void {
    // Up to the first held value: what follows it may not leave before it does.
    this.#releasedCount = this.#held.length === 0 ? this.#pieces.length : this.#held[0]!.index
  }

  /** Hold a pair's value text[from, to) until its name comes (see HeldValue); returns where the copied text resumes. */
  #hold(text: string, out: number, from: number, to: number, value: string, hint: number): number {
    const d = this.#depth - 1
    this.#pieces.push(text.slice(out, from))
    const h = new HeldValue(text.slice(from, to), value, hint, this.#consumed + to, d, this.#pieces.length)
    this.#pieces.push(h)
    this.#deferred = true
    this.#pairHeld[d] = h
    this.#held.push(h)
    return to
  }

  /** A held value's verdict: read again with the hints its name adds (none: as it was, nothing found). */
  #settle(h: HeldValue, hint: number): void {
    if ((hint & ~h.hint) !== 0) h.replacement = this.#visitor.visit(h.text, h.hint | hint)
    this.#pairHeld[h.depth] = undefined
    const held = this.#held
    held.splice(held.indexOf(h), 1)
  }

  /** The member naming the pair of the open object was read. */
  #named(name: string, at: number): void {
    const d = this.#depth - 1
    if (this.#pairName[d] !== undefined || name.length > PAIR_NAME_MAX_CHARS) return
    this.#pairName[d] = name
    const h = this.#pairHeld[d]
    if (h !== undefined) this.#settle(h, this.#consumed + at - h.end > PAIR_REACH_CHARS ? 0 : this.#o.hintOf(name))
  }

  /** The hints of the open object's name, for its pair's value of `length` characters (0 for one too short to replace). */
  #nameHint(length: number): number {
    const name = this.#pairName[this.#depth - 1]
    return name === undefined || length < (this.#visitor.minLength ?? 0) ? 0 : this.#o.hintOf(name)
  }

  /** Put a visitor's replacement of text[from, to) (a string or a deferred token) in the output; returns where the copied text resumes. */
  #splice(text: string, out: number, from: number, to: number, replacement: string | DeferredString): number {
    if (typeof replacement === 'string') this.#pieces.push(text.slice(out, from), jsonString(replacement))
    else {
      this.#pieces.push(text.slice(out, from), '"', replacement, '"')
      this.#deferred = true
    }
    return to
  }

  #fail(what: string, at: number): never {
    // Position only: never the bytes themselves (they may be sensitive, and this can be logged).
    throw new JsonSyntaxError(`invalid JSON at character ${this.#consumed + at}: ${what}`)
  }

  /** Process a piece of text. Throws JsonSyntaxError. */
  write(chunk: string): void {
    if (this.#stopped) return
    // join, not +: a flat string, where + makes a cons string every character access unwraps
    this.#run(this.#carry === '' ? chunk : [this.#carry, chunk].join(''), false)
  }

  /** No more input. Throws JsonSyntaxError when the document is incomplete. */
  end(): void {
    if (this.#stopped) return
    this.#run(this.#carry, true)
    if (this.#stopped) return
    if (this.#depth !== 0 || this.#expect === EXPECT_COLON) this.#fail('unexpected end of input', 0)
    if (!this.#o.multi && this.#values === 0) this.#fail('no JSON value', 0)
    if (this.#o.multi) this.#release() // whitespace after the last record
  }

  #run(text: string, final: boolean): void {
    this.#carry = ''
    let out = 0 // start of text not yet copied to the record
    let i = 0
    let nextBackslash = -1
    const n = text.length
    const o = this.#o
    while (i < n) {
      const c = text.charCodeAt(i)
      // whitespace (and a byte-order mark at the very start)
      if (c === 32 || c === 10 || c === 13 || c === 9 || (c === 0xfeff && this.#consumed + i === 0)) {
        i++
        continue
      }
      const expect = this.#expect
      let slot = -1
      if (c === 34 && (expect === EXPECT_KEY || expect === EXPECT_KEY_OR_CLOSE)) {
        // the same key as in the previous record at this place? (no slice, no hint lookup)
        const d = this.#depth - 1
        const k = this.#keyOrdinal[d]!
        this.#keyOrdinal[d] = k + 1
        if (d < KEY_DEPTHS && k < KEY_SLOTS) {
          slot = d * KEY_SLOTS + k
          const known = this.#keyText[slot]
          // A remembered key has no backslash or quote, so the quote after it closes the string.
          if (known !== undefined && text.charCodeAt(i + 1 + known.length) === 34 && text.startsWith(known, i + 1)) {
            this.#key(known, this.#keyHint[slot]!, this.#keyRole[slot]!)
            this.#expect = EXPECT_COLON
            i += known.length + 2
            continue
          }
        }
      }
      if (c === 34) {
        // a string: find its closing quote (not preceded by an odd run of backslashes)
        let q = i
        for (;;) {
          q = text.indexOf('"', q + 1)
          if (q === -1) break
          let b = q - 1
          while (text.charCodeAt(b) === 92) b--
          if ((q - b) % 2 === 1) break
        }
        if (q === -1) {
          if (final) this.#fail('unterminated string', i)
          if (n - i > o.maxTokenChars) this.#fail(`a string longer than ${o.maxTokenChars} characters`, i)
          break
        }
        // Checked whole too: held or not, a string over the limit fails the same, wherever the
        // chunks of the transfer split it (it passed when it happened to arrive in one piece).
        if (q - i > o.maxTokenChars) this.#fail(`a string longer than ${o.maxTokenChars} characters`, i)
        // Next backslash in the text, searched again only once passed (one scan per chunk, not per string).
        if (nextBackslash <= i) {
          nextBackslash = text.indexOf('\\', i + 1)
          if (nextBackslash === -1) nextBackslash = n
        }
        let value: string
        const escaped = nextBackslash < q
        if (escaped) {
          try {
            value = JSON.parse(text.slice(i, q + 1)) as string
          } catch {
            this.#fail('bad escape in string', i)
          }
        } else value = text.slice(i + 1, q)
        if (expect === EXPECT_KEY || expect === EXPECT_KEY_OR_CLOSE) {
          const hint = this.#o.hintOf(value)
          // Keys carry data too (maps keyed by e-mail): a key in scope is visited like a value.
          // Only a key that was visited and found clean is remembered, so a remembered key
          // (skipped above) never hides a finding, whatever the scope where it is met again.
          let clean = false
          if (this.#scope[this.#depth - 1] === FULL) {
            const before = this.#visitor.hits
            const replacement = this.#visitor.visit(value, 0)
            if (replacement === undefined) clean = this.#visitor.hits === before
            else out = this.#splice(text, out, i, q + 1, typeof replacement === 'string' ? this.#uniqueKey(replacement) : replacement)
          }
          const role = pairRole(value)
          if (clean && slot !== -1 && !escaped && value.length <= KEY_MAX_CHARS) {
            this.#keyText[slot] = value
            this.#keyHint[slot] = hint
            this.#keyRole[slot] = role
          }
          this.#key(value, hint, role)
          this.#expect = EXPECT_COLON
        } else if (expect === EXPECT_VALUE || expect === EXPECT_VALUE_OR_CLOSE) {
          const role = this.#valRole
          this.#valRole = 0
          if (this.#valScope === FULL) {
            const before = this.#visitor.hits
            const hint = role === PAIR_VALUE ? this.#valHint | this.#nameHint(value.length) : this.#valHint
            const replacement = this.#visitor.visit(value, hint)
            if (replacement !== undefined) out = this.#splice(text, out, i, q + 1, replacement)
            else if (role === PAIR_VALUE && this.#visitor.hits === before && this.#holdable(value)) out = this.#hold(text, out, i, q + 1, value, hint)
          }
          if (role === PAIR_NAME) this.#named(value, i)
          i = q + 1
          if (this.#afterValue()) {
            this.#pieces.push(text.slice(out, i))
            out = i
            if (!this.#recordEnd(i)) return
          }
          continue
        } else this.#fail('unexpected string', i)
        i = q + 1
        continue
      }
      switch (c) {
        case 123: // {
        case 91: // [
          if (expect !== EXPECT_VALUE && expect !== EXPECT_VALUE_OR_CLOSE) this.#fail(`unexpected "${c === 123 ? '{' : '['}"`, i)
          if (this.#depth >= this.#maxDepth) this.#fail(`nesting deeper than ${this.#maxDepth}`, i)
          if (this.#valRole === PAIR_VALUE) this.#valHint |= this.#nameHint(Infinity)
          this.#type[this.#depth] = c === 123 ? OBJ : ARR
          this.#keyOrdinal[this.#depth] = 0
          this.#keysOut[this.#depth] = undefined
          if (c === 123) {
            this.#pairName[this.#depth] = undefined
            this.#pairHeld[this.#depth] = undefined
            // A pair's value that is an object ({"key":"ssn","value":{"string_value":…}}, GA4's
            // event_params): its members take the pair's hints.
            this.#inherit[this.#depth] = this.#valRole === PAIR_VALUE ? this.#valHint : 0
          }
          this.#valRole = 0
          this.#hint[this.#depth] = this.#valHint
          this.#scope[this.#depth] = this.#valScope
          this.#level[this.#depth] = this.#valLevel
          this.#depth++
          this.#expect = c === 123 ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE
          i++
          continue
        case 125: // }
        case 93: {
          // ]
          const d = this.#depth - 1
          const want = c === 125 ? OBJ : ARR
          if (d < 0 || this.#type[d] !== want) this.#fail(`unexpected "${c === 125 ? '}' : ']'}"`, i)
          if (expect !== EXPECT_COMMA_OR_CLOSE && expect !== (want === OBJ ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE)) this.#fail('unexpected end of container', i)
          // A held value whose object ends without a name: as it was.
          const held = want === OBJ ? this.#pairHeld[d] : undefined
          if (held !== undefined) this.#settle(held, 0)
          this.#depth = d
          i++
          if (this.#afterValue()) {
            this.#pieces.push(text.slice(out, i))
            out = i
            if (!this.#recordEnd(i)) return
          }
          continue
        }
        case 58: // :
          if (expect !== EXPECT_COLON) this.#fail('unexpected ":"', i)
          this.#expect = EXPECT_VALUE
          i++
          continue
        case 44: {
          // ,
          if (expect !== EXPECT_COMMA_OR_CLOSE) this.#fail('unexpected ","', i)
          const d = this.#depth - 1
          if (this.#type[d] === OBJ) this.#expect = EXPECT_KEY
          else {
            this.#expect = EXPECT_VALUE
            this.#valHint = this.#hint[d]!
            this.#valScope = this.#scope[d]!
            this.#valLevel = this.#level[d]!
          }
          i++
          continue
        }
      }
      // A record separator (RFC 7464 application/json-seq: RS before each record) between
      // records, copied like whitespace.
      if (c === 0x1e && o.multi && this.#depth === 0 && expect === EXPECT_VALUE) {
        i++
        continue
      }
      if (expect !== EXPECT_VALUE && expect !== EXPECT_VALUE_OR_CLOSE) this.#fail('unexpected character', i)
      // a number or a literal: scan to its end
      let j = i
      while (j < n) {
        const d = text.charCodeAt(j)
        if ((d >= 48 && d <= 57) || d === 45 || d === 43 || d === 46 || (d >= 97 && d <= 122) || d === 69) j++
        else break
      }
      if (j === n && !final) {
        // The same limit as a string: whether a long number is accepted must not depend on
        // where the chunks of the transfer happen to split it.
        if (j - i > o.maxTokenChars) this.#fail(`a number or literal longer than ${o.maxTokenChars} characters`, i)
        break // may continue in the next chunk
      }
      if (j - i > o.maxTokenChars) this.#fail(`a number or literal longer than ${o.maxTokenChars} characters`, i)
      const word = text.slice(i, j)
      const literal = word === 'true' || word === 'false' || word === 'null'
      if (!literal && !NUMBER.test(word)) this.#fail('not a JSON value', i)
      // A number under a field that names a sensitive type ({"ssn": 123456789}) is that value
      // all the same; elsewhere numbers are ids, counts and amounts, copied digit for digit.
      const role = this.#valRole
      this.#valRole = 0
      if (!literal && this.#valScope === FULL) {
        const value = integerOf(word) ?? word
        const hint = role === PAIR_VALUE ? this.#valHint | this.#nameHint(value.length) : this.#valHint
        let replacement
        const before = this.#visitor.hits
        if (hint !== 0) replacement = this.#visitor.visit(value, hint)
        if (replacement !== undefined) out = this.#splice(text, out, i, j, replacement)
        else if (role === PAIR_VALUE && this.#visitor.hits === before && this.#holdable(value)) out = this.#hold(text, out, i, j, value, hint)
      }
      i = j
      if (this.#afterValue()) {
        this.#pieces.push(text.slice(out, i))
        out = i
        if (!this.#recordEnd(i)) return
      }
    }
    // Keep the unfinished token for the next chunk; everything before it is output.
    if (i < n) this.#carry = text.slice(i)
    if (out < i) this.#pieces.push(text.slice(out, i))
    this.#consumed += i
    // Whitespace between records counts too: a record is complete at its end, not before.
    const maxRecord = o.maxRecordChars
    if (o.multi && maxRecord !== undefined && this.#consumed + (n - i) - this.#recordFrom > maxRecord && (this.#depth > 0 || this.#carry !== '')) {
      this.#fail(`a record longer than ${maxRecord} characters`, this.#recordFrom - this.#consumed)
    }
    // A held value whose name can no longer come within reach (no name starts before the text
    // carried over): as it was. The same verdict wherever the chunks of the transfer split.
    const held = this.#held
    while (held.length > 0 && this.#consumed - held[0]!.end > PAIR_REACH_CHARS) this.#settle(held[0]!, 0)
    if (!o.multi) {
      if (o.checkpoint()) this.#release()
      else this.#stop()
    }
  }

  /** A pair's value may be held: long enough to be replaced, and the open object has no name yet, nor a held value. */
  #holdable(value: string): boolean {
    const d = this.#depth - 1
    return value.length >= (this.#visitor.minLength ?? 0) && this.#pairName[d] === undefined && this.#pairHeld[d] === undefined
  }

  #stop(): void {
    this.#stopped = true
    this.#held = []
    this.#pieces.length = this.#releasedCount
    this.#carry = ''
  }

  /**
   * A rewritten key, made unique among the rewritten keys of its object: masks (and redaction)
   * map many keys to one (`jane@x.com` and `jdoe@x.com` are both `j***@x.com`), and a client's
   * JSON.parse keeps only the last of duplicate keys, the other entries silently lost. The
   * second becomes `j***@x.com#2`, the third `#3`; tokens and hashes differ by value already.
   */
  #uniqueKey(key: string): string {
    const d = this.#depth - 1
    const written = (this.#keysOut[d] ??= new Set())
    let unique = key
    for (let n = 2; written.has(unique); n++) unique = `${key}#${n}`
    written.add(unique)
    return unique
  }

  /** A key was read: hint, role and scope of the value that follows. */
  #key(key: string, hint: number, role: number): void {
    const d = this.#depth - 1
    // A pair's value: the hint of the key holding its object now, its name's when it is read
    // (#nameHint: a name is often data, `{"name":"Ada Lovelace","value":3}`, and hinting it costs).
    this.#valHint = hint | this.#inherit[d]! | (role === PAIR_VALUE ? this.#hint[d]! : 0)
    this.#valRole = role
    const scope = this.#scope[d]!
    const level = this.#level[d]!
    if (scope === FULL) {
      this.#valScope = FULL
      return
    }
    let next = 0
    let full = false
    const paths = this.#paths
    for (let p = 0; p < paths.length && p < MAX_SCOPE_PATHS; p++) {
      if ((scope & (1 << p)) === 0) continue
      const path = paths[p]!
      if (path[level] !== key) continue
      if (path.length === level + 1) full = true
      else next |= 1 << p
    }
    this.#valScope = full ? FULL : next
    this.#valLevel = level + 1
  }

  /** A value ended; returns true when it was a top-level value (a record, counted by #recordEnd). */
  #afterValue(): boolean {
    if (this.#depth === 0) {
      if (!this.#o.multi) {
        this.#values++
        this.#expect = EXPECT_END
        return false
      }
      this.#expect = EXPECT_VALUE
      this.#resetTop()
      return true
    }
    this.#expect = EXPECT_COMMA_OR_CLOSE
    return false
  }

  #recordEnd(at: number): boolean {
    const end = this.#consumed + at
    // Also a record that began and ended within one write: the same verdict however the transfer splits it.
    // Refused before it is counted, at the record's start, as when it is held over several writes:
    // one that came whole in one write was counted (the NDJSON error record said one more record
    // was delivered than was) and placed elsewhere.
    const maxRecord = this.#o.maxRecordChars
    if (maxRecord !== undefined && end - this.#recordFrom > maxRecord) this.#fail(`a record longer than ${maxRecord} characters`, this.#recordFrom - this.#consumed)
    this.#values++
    this.#recordFrom = end
    if (this.#o.checkpoint()) {
      this.#release()
      return true
    }
    this.#stop()
    return false
  }
}
