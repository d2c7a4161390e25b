// One export's detection and actions: every string value (JSON string, CSV field) passes through
// `visit`, which finds sensitive values, applies the preset's action to each, counts by type,
// action and rule, and records what must stop the export (a `block` action, or a high-risk
// value the preset would let out unprotected, which the export policy then judges).
import { maskerFor } from './masks.ts'
import type { CompiledRule, RulePack } from './rule-pack.ts'
import type { PendingToken, TokenBatch, Tokenizer } from './tokenizer.ts'

export const ACTION_NAMES = ['mask', 'tokenize', 'hash', 'redact', 'block'] as const
export type ActionName = (typeof ACTION_NAMES)[number]
export const NONE = -1
export const MASK = 0
export const TOKENIZE = 1
export const HASH = 2
export const REDACT = 3
export const BLOCK = 4
/** Column of the counts table for values found and let through (no action for their type). */
export const FOUND = 5
const COLS = 6

// Shortest value any built-in rule matches ("1.1.1.1", "a@b.co" → 6).
const MIN_LENGTH = 6
// Shorter candidates tried when a match that spans spaces is rejected (see ExportScanner#shorter).
const MAX_CUTS = 2

/** What a preset does with each type of one rule pack: Int8Array by type index (-1: nothing). */
export function compileActions(pack: RulePack, preset: Readonly<Record<string, string>>): Int8Array {
  const actions = new Int8Array(pack.types.length).fill(NONE)
  for (const [type, action] of Object.entries(preset)) {
    const t = pack.typeIndex(type)
    const a = ACTION_NAMES.indexOf(action as ActionName)
    if (t === -1) throw new Error(`preset type "${type}" is not in rule pack ${pack.name}@${pack.version} (types: ${pack.types.map((x) => x.name).join(', ')})`)
    if (a === -1) throw new Error(`preset action "${action}" for ${type}: expected one of ${ACTION_NAMES.join(', ')}`)
    actions[t] = a
  }
  return actions
}

/** A high-risk type whose values would leave readable: no action, or only a partial mask. */
export function unprotectedHighRisk(pack: RulePack, actions: Int8Array): number {
  let mask = 0
  for (const t of pack.types) if (t.risk === 'high' && (actions[t.index] === NONE || actions[t.index] === MASK)) mask |= 1 << t.index
  return mask
}

export class ExportScanner {
  readonly pack: RulePack
  readonly actions: Int8Array
  /** counts[type * 6 + action]; column FOUND counts values let through. */
  readonly counts: Uint32Array
  /** Findings per rule (RulePack.labels index), and the rules in the order they first hit. */
  readonly #ruleHits: Uint32Array
  readonly #ruleOrder: number[] = []
  /** Values found so far, acted on or not (the JSON rewriter's key memo reads it). */
  hits = 0
  /** Shorter values are never read (the JSON rewriter holds no pair value shorter). */
  readonly minLength = MIN_LENGTH
  /** Types seen so far (bit mask). */
  detected = 0
  /** First type whose action is block, and its rule (-1: none yet). */
  blockedType = -1
  blockedRule: string | undefined = undefined
  /** Set when a type the policy cares about shows up for the first time; the stream re-asks the policy. */
  policyDirty = false
  /** When set, every finding is appended (the corpus evaluation; never in the proxy). */
  findings: { type: string; value: string; rule: string }[] | undefined = undefined
  readonly #tokenizer: Tokenizer | undefined
  readonly #scan: { regex: RegExp; rules: readonly CompiledRule[] }
  /** Required literals of the enabled rules (RulePack.literals indexes), checked per value. */
  readonly #literals: string[] = []
  readonly #literalBits: number[] = []
  /** Scans without the rules whose literal a value lacks, by absent-literal mask. */
  readonly #scans: ({ regex: RegExp; rules: readonly CompiledRule[] } | undefined)[] = []
  readonly #enabled: number
  readonly #watch: number
  readonly #maskers: ((v: string) => string)[]
  #batch: TokenBatch | undefined = undefined
  /** The last value found in the string being visited: its type and end (-1: none yet). */
  #prevType = -1
  #prevEnd = -1

  constructor(pack: RulePack, actions: Int8Array, tokenizer: Tokenizer | undefined) {
    this.pack = pack
    this.actions = actions
    this.counts = new Uint32Array(pack.types.length * COLS)
    this.#ruleHits = new Uint32Array(pack.labels.length)
    this.#tokenizer = tokenizer
    // Types with an action, plus high-risk ones (the policy must know when they appear).
    let enabled = 0
    for (const t of pack.types) if (actions[t.index] !== NONE || t.risk === 'high') enabled |= 1 << t.index
    this.#enabled = enabled
    this.#watch = unprotectedHighRisk(pack, actions)
    this.#scan = pack.combined(enabled)
    for (let l = 0; l < pack.literals.length; l++) {
      if (!this.#scan.rules.some((r) => r.literal === l)) continue
      this.#literals.push(pack.literals[l]!)
      this.#literalBits.push(1 << l)
    }
    this.#maskers = pack.types.map((t) => maskerFor(t.name))
    if (tokenizer === undefined && actions.some((a) => a === TOKENIZE || a === HASH)) throw new Error('tokenize/hash actions need a keyring')
  }

  /**
   * From now on a value replaced whole by a token (a field's value) comes back from visit() as a
   * PendingToken, computed with the others of its batch on flush(): the JSON rewriter collects a
   * chunk's tokens and flushes before its output leaves. Tokens inside longer text are computed
   * at once.
   */
  deferTokens(): void {
    if (this.#tokenizer !== undefined) this.#batch ??= this.#tokenizer.batch()
  }

  /** Compute the pending tokens (see deferTokens). */
  flush(): void {
    this.#batch?.flush()
  }

  /** Findings per rule label ("id@version"), in the order the rules first hit. */
  get ruleCounts(): Map<string, number> {
    const m = new Map<string, number>()
    for (const r of this.#ruleOrder) m.set(this.pack.labels[r]!, this.#ruleHits[r]!)
    return m
  }

  /** Sum of one action column over all types. */
  total(action: number): number {
    let n = 0
    for (let t = 0; t < this.pack.types.length; t++) n += this.counts[t * COLS + action]!
    return n
  }

  count(type: number, action: number): number {
    return this.counts[type * COLS + action]!
  }

  /** High-risk types seen that would leave readable (bit mask). */
  get unprotectedSeen(): number {
    return this.detected & this.#watch
  }

  /**
   * Scan one string value; `hint` is the bit mask of types its field name suggests. Returns the
   * replacement, or undefined when the value leaves unchanged.
   */
  visit(value: string, hint: number): string | PendingToken | undefined {
    if (value.length < MIN_LENGTH) return undefined
    const fieldTypes = hint & this.#enabled
    if (fieldTypes !== 0) {
      for (let t = 0; fieldTypes >>> t !== 0; t++) {
        if ((fieldTypes & (1 << t)) === 0) continue
        const rule = this.pack.fieldRules[t]
        if (rule?.validator !== undefined && rule.validator(value)) return this.#act(t, rule.counter, value, true)
      }
    }
    // Rules that need a character the value lacks ("@" of an e-mail) cannot match: scan without them.
    let absent = 0
    const literals = this.#literals
    for (let l = 0; l < literals.length; l++) if (value.indexOf(literals[l]!) === -1) absent |= this.#literalBits[l]!
    const { regex, rules } = absent === 0 ? this.#scan : (this.#scans[absent] ??= this.pack.combined(this.#enabled, absent))
    regex.lastIndex = 0
    this.#prevEnd = -1
    let out: string | undefined
    let last = 0
    let m: RegExpExecArray | null
    while ((m = regex.exec(value)) !== null) {
      const start = m.index
      let g = 1
      while (m[g] === undefined) g++
      let rule = rules[g - 1]!
      let end = balanced(rule, value, start, start + m[0].length)
      // An empty match (a custom rule such as "(?<=acct )\d{0,8}") is no value; acting on it left
      // lastIndex where it was, and the scan matched the same place forever (the worker hung).
      if (end === start || !this.#accept(rule, value, start, end, hint)) {
        // Another rule may still match here (a Luhn-failing card can be a valid phone number).
        let found = false
        for (let i = g; i < rules.length; i++) {
          const r = rules[i]!
          r.sticky.lastIndex = start
          const m2 = r.sticky.exec(value)
          const end2 = m2 === null ? start : balanced(r, value, start, start + m2[0].length)
          if (end2 !== start && this.#accept(r, value, start, end2, hint)) {
            rule = r
            end = end2
            found = true
            break
          }
        }
        if (!found) {
          // The pattern ran on into what follows the value across a space ("4111 1111 1111 1111
          // 123": a card and its CVV; "4111111111111111 05/27"): the value may end earlier.
          const cut = this.#shorter(rules[g - 1]!, value, start, end, hint)
          if (cut === -1) {
            regex.lastIndex = start + 1
            continue
          }
          rule = rules[g - 1]!
          end = cut
        }
      }
      this.#prevType = rule.type
      this.#prevEnd = end
      const whole = start === 0 && end === value.length
      const replacement = this.#act(rule.type, rule.counter, whole ? value : value.slice(start, end), whole)
      if (typeof replacement === 'object') return replacement // the whole value: nothing follows
      if (replacement !== undefined) {
        out = (out ?? '') + value.slice(last, start) + replacement
        last = end
      }
      regex.lastIndex = end
    }
    return out === undefined ? undefined : out + value.slice(last)
  }

  /**
   * A shorter match of `rule` at `start` that ends before one of the last spaces or line breaks
   * of the rejected candidate text[start, end) and is accepted; -1: none. Built-in rules end where
   * a space may follow, so the shorter match is one the pattern allows there. At most MAX_CUTS
   * tries. Line breaks too: grouped numbers may be wrapped across lines, so a card's candidate
   * runs on into the next line ("4111 1111 1111 1111\n123", a CVV below it).
   */
  #shorter(rule: CompiledRule, text: string, start: number, end: number, hint: number): number {
    // Only inside the candidate (tens of characters): a search for the previous space that ran on
    // past `start` scanned back through the whole value for every rejected candidate, quadratic
    // on a long value without spaces ("4155550100,…" × 95 000: 14 s for 1 MiB).
    let tries = 0
    for (let cut = end - 1; cut > start && tries < MAX_CUTS; cut--) {
      if (!isGap(text.charCodeAt(cut)) || isGap(text.charCodeAt(cut - 1))) continue
      tries++
      rule.sticky.lastIndex = start
      const m = rule.sticky.exec(text.slice(0, cut))
      if (m !== null && m[0].length === cut - start && this.#accept(rule, text, start, cut, hint)) return cut
    }
    return -1
  }

  #accept(rule: CompiledRule, text: string, start: number, end: number, hint: number): boolean {
    if ((hint & (1 << rule.type)) === 0) {
      // The field name does not vouch for the type: context words must be there (when required),
      // and an exclusion word counts only after the nearest context word ("order 123, phone
      // 415-555-0143" is a phone; "phone: see order #4155550143" is not).
      let context = rule.contextWords === undefined ? -1 : lastWordEnd(text, start, rule.contextWindow, rule.contextWords)
      // A list after one context word ("Phones: (415) 555-0143, (212) 555-0199, (646) 555-0123"):
      // the value right after one of the same type, only a separator between, is one too. The
      // window alone let every number past its 32 characters out readable.
      if (context === -1 && rule.contextWords !== undefined && rule.type === this.#prevType && this.#prevEnd !== -1 && listSeparator(text, this.#prevEnd, start)) context = this.#prevEnd
      if (rule.contextRequired && context === -1) return false
      if (rule.excludeWords !== undefined && excludedAfter(text, start, rule.excludeWindow, rule.excludeWords, context)) return false
    }
    return rule.validator(text, start, end)
  }

  #act(type: number, rule: number, value: string, whole: boolean): string | PendingToken | undefined {
    const bit = 1 << type
    this.hits++
    if ((this.detected & bit) === 0) {
      this.detected |= bit
      if ((this.#watch & bit) !== 0) this.policyDirty = true
    }
    if (this.#ruleHits[rule]!++ === 0) this.#ruleOrder.push(rule)
    const action = this.actions[type]!
    const name = this.pack.types[type]!.name
    if (this.findings !== undefined) this.findings.push({ type: name, value, rule: this.pack.labels[rule]! })
    switch (action) {
      case MASK:
        this.counts[type * COLS + MASK]!++
        return this.#maskers[type]!(value)
      case TOKENIZE:
        this.counts[type * COLS + TOKENIZE]!++
        if (whole && this.#batch !== undefined) return this.#batch.add(name, value)
        return this.#tokenizer!.tokenize(name, value)
      case HASH:
        this.counts[type * COLS + HASH]!++
        return this.#tokenizer!.hash(name, value)
      case REDACT:
        this.counts[type * COLS + REDACT]!++
        return `[redacted:${name}]`
      case BLOCK:
        this.counts[type * COLS + BLOCK]!++
        if (this.blockedType === -1) {
          this.blockedType = type
          this.blockedRule = this.pack.labels[rule]
        }
        return undefined
      default:
        this.counts[type * COLS + FOUND]!++
        return undefined
    }
  }
}

/**
 * The end of the candidate text[start, end) of `rule` without a last ")" it does not open: in
 * "(+1 415 555 0143)" the phone pattern's optional ")" after a digit took the bracket around the
 * number, so a mask or token swallowed it ("([redacted:phone_e164]", "(+1*******0143") and the
 * token was of "+14155550143)", not the number. Kept when the pattern cannot end without it.
 */
function balanced(rule: CompiledRule, text: string, start: number, end: number): number {
  if (end - start < 2 || text.charCodeAt(end - 1) !== 41) return end
  let depth = 0
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i)
    if (c === 40) depth++
    else if (c === 41) depth--
  }
  if (depth >= 0) return end
  rule.sticky.lastIndex = start
  const m = rule.sticky.exec(text.slice(0, end - 1))
  return m !== null && m[0].length === end - 1 - start ? end - 1 : end
}

/** A space or line break (where #shorter may cut a candidate). */
function isGap(c: number): boolean {
  return c === 32 || c === 10 || c === 13
}

// What may stand between two items of a list: blanks, line breaks, , ; / | & - and "and", "or".
const LIST_SEPARATOR = /^[\s,;/|&-]*(?:(?:and|or)[\s,;/|&-]*)?$/i

function listSeparator(text: string, from: number, to: number): boolean {
  return to - from <= 8 && LIST_SEPARATOR.test(text.slice(from, to))
}

function isLower(c: number): boolean {
  return c >= 97 && c <= 122
}

/**
 * Whether `word` (lower-case) at text[at] starts a word: a word that begins with a letter must
 * not continue one ("tin" in "routing", "ref" in "preferred", "tel" in "hotel", "order" in
 * "border" are not the words), unless a capital starts it after a lower-case letter ("homePhone").
 * Words that begin with punctuation ("#", "ss#") stand anywhere.
 */
function startsWord(text: string, at: number, word: string): boolean {
  if (at === 0 || !isLower(word.charCodeAt(0))) return true
  const prev = text.charCodeAt(at - 1) | 0x20
  if (!isLower(prev)) return true
  const c = text.charCodeAt(at)
  return c >= 65 && c <= 90 && isLower(text.charCodeAt(at - 1))
}

/**
 * The end (index into text) of the last of `words` that starts a word in the `window` characters
 * before `start`, case-insensitive; -1: none.
 */
function lastWordEnd(text: string, start: number, window: number, words: readonly string[]): number {
  const from = Math.max(0, start - window)
  const before = text.slice(from, start).toLowerCase()
  // Lower-casing changed the length ("İ"): positions no longer map back; any occurrence counts,
  // as from the start of the window (exclusion words anywhere in theirs still count).
  if (before.length !== start - from) return words.some((w) => before.includes(w)) ? from : -1
  let best = -1
  for (const w of words) {
    for (let i = before.lastIndexOf(w); i !== -1; i = i === 0 ? -1 : before.lastIndexOf(w, i - 1)) {
      if (!startsWord(text, from + i, w)) continue
      best = Math.max(best, from + i + w.length)
      break
    }
  }
  return best
}

/**
 * Whether one of the exclusion `words` starts a word in the `window` characters before `start`
 * and after the context word that ends at `context` (-1: none). A punctuation word right after
 * the context word belongs to it: "SSN# 123456789", "phone # 415 555 0143".
 */
function excludedAfter(text: string, start: number, window: number, words: readonly string[], context: number): boolean {
  const from = Math.max(0, start - window, context)
  if (from >= start) return false
  const before = text.slice(from, start).toLowerCase()
  if (before.length !== start - from) return words.some((w) => before.includes(w))
  for (const w of words) {
    for (let i = before.indexOf(w); i !== -1; i = before.indexOf(w, i + 1)) {
      const at = from + i
      if (!startsWord(text, at, w)) continue
      if (context !== -1 && !isLower(w.charCodeAt(0)) && (at === context || (at === context + 1 && text.charCodeAt(context) === 32))) continue
      return true
    }
  }
  return false
}
