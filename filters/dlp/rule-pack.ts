// A rule pack is data (filters/dlp/rules/v1.2.json or an operator's file): types with a risk
// level, value rules (pattern + named validator + context words), and field-name rules. This
// module checks a pack and compiles it: one combined regular expression per set of enabled
// types, so a string is scanned once whatever the number of rules.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { FIELD_VALIDATORS, VALIDATORS, type FieldValidator, type Validator } from './validators.ts'

export const BUILTIN_RULE_PACK = fileURLToPath(new URL('./rules/v1.2.json', import.meta.url))

export type Risk = 'low' | 'medium' | 'high'

export interface TypeDef {
  readonly name: string
  readonly index: number
  readonly risk: Risk
}

export interface CompiledRule {
  readonly id: string
  readonly version: string
  /** "id@version", what reports and logs show. */
  readonly label: string
  /** Index into RulePack.labels (per-rule counters). */
  readonly counter: number
  readonly type: number
  readonly validator: Validator
  readonly pattern: string
  /** Sticky copy, to retry this rule where another rule's candidate was rejected. */
  readonly sticky: RegExp
  readonly contextWords: readonly string[] | undefined
  readonly contextWindow: number
  readonly contextRequired: boolean
  readonly excludeWords: readonly string[] | undefined
  readonly excludeWindow: number
  /** A character every match contains (see requiredLiteral), as an index into RulePack.literals; -1: none. */
  readonly literal: number
}

export interface FieldRule {
  readonly type: number
  readonly label: string
  /** Index into RulePack.labels (per-rule counters). */
  readonly counter: number
  readonly validator: FieldValidator | undefined
  readonly exact: ReadonlySet<string>
  readonly contains: readonly string[]
  /** Names that also match as one word of a key (`customer_ssn`, `ssnNumber`, `tel_no`). */
  readonly words: ReadonlySet<string>
}

export interface CombinedScan {
  readonly regex: RegExp
  /** Rules in group order: capture group i+1 is rules[i]. */
  readonly rules: readonly CompiledRule[]
}

export class RulePackError extends Error {}

interface RawRule {
  id?: unknown
  version?: unknown
  type?: unknown
  pattern?: unknown
  flags?: unknown
  validator?: unknown
  context?: { words?: unknown; window?: unknown; required?: unknown }
  exclude?: { words?: unknown; window?: unknown }
}

function stringList(v: unknown, where: string): string[] {
  if (!Array.isArray(v) || v.some((w) => typeof w !== 'string')) throw new RulePackError(`${where}: expected a list of strings`)
  return (v as string[]).map((w) => w.toLowerCase())
}

const MAX_FIELD_MEMO = 4096
// A key's words: an upper-case run ("SSN" of "customerSSN", "SSNNumber"), with a plural "s"
// ("customerSSNs"), a capitalized or lower-case word, a digit run.
const KEY_WORD = /[A-Z]+s?(?![a-z])|[A-Z]?[a-z]+|\d+/g
const PACK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const ASCII = /^[\x00-\x7f]*$/

/**
 * `w` without an English plural ending ("ssns": ssn, "faxes": fax), or undefined. Not "ss"
 * ("address", "class"): no plural.
 */
function singular(w: string): string | undefined {
  if (w.length < 3 || !w.endsWith('s') || w.endsWith('ss')) return undefined
  return /(?:[sxz]|[cs]h)es$/.test(w) ? w.slice(0, -2) : w.slice(0, -1)
}

/** A lookup by a name the pack chose: own properties only ("constructor" is not a validator). */
function own<T>(table: Record<string, T>, name: unknown): T | undefined {
  return typeof name === 'string' && Object.hasOwn(table, name) ? table[name] : undefined
}

/**
 * A punctuation character that every match of `pattern` must contain, read from the pattern's
 * top level: a literal atom (`@`, `\+`, `-`) outside any group or class whose quantifier, if
 * any, requires at least one. Used to skip rules that cannot match a value at all (an e-mail
 * rule on a value without "@"). Anything it does not fully understand (alternation at the top
 * level, back-references, unusual escapes, malformed braces) gives undefined: no shortcut.
 */
export function requiredLiteral(pattern: string): string | undefined {
  let i = 0
  const n = pattern.length
  let found: string | undefined
  while (i < n) {
    const c = pattern[i]!
    let literal: string | undefined
    if (c === '|') return undefined
    if (c === '\\') {
      const e = pattern[i + 1]
      if (e === undefined) return undefined
      if (/[A-Za-z0-9]/.test(e)) {
        if (!'dDwWsSbB'.includes(e)) return undefined // \u \x \k \p \1 …: not worth understanding
      } else literal = e
      i += 2
    } else if (c === '[') {
      let j = i + 1
      while (j < n && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : 1
      if (j >= n) return undefined
      i = j + 1
    } else if (c === '(') {
      let depth = 0
      let j = i
      for (; j < n; j++) {
        const d = pattern[j]
        if (d === '\\') j++
        else if (d === '[') {
          j++
          while (j < n && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : 1
        } else if (d === '(') depth++
        else if (d === ')' && --depth === 0) break
      }
      if (j >= n) return undefined
      i = j + 1
    } else if (c === ')' || c === ']' || c === '{' || c === '}' || c === '*' || c === '+' || c === '?') {
      return undefined // a quantifier or bracket where an atom should be: not understood
    } else {
      if (c !== '^' && c !== '$' && c !== '.' && !/[A-Za-z0-9\s]/.test(c)) literal = c
      i++
    }
    // the atom's quantifier
    let required = true
    const q = pattern[i]
    if (q === '?' || q === '*') {
      required = false
      i++
    } else if (q === '+') i++
    else if (q === '{') {
      const m = /^\{(\d+)(?:,(\d*))?\}/.exec(pattern.slice(i))
      if (m === null) return undefined
      required = Number(m[1]) >= 1
      i += m[0].length
    }
    if (i < n && pattern[i] === '?' && q !== undefined && '?*+{'.includes(q)) i++ // lazy
    if (required && literal !== undefined && found === undefined) found = literal
  }
  return found
}

/**
 * The first dangerous repetition in `pattern` (the atom and its quantifier), or undefined. A rule
 * runs against every string of every export (up to maxValueBytes, 1 MiB by default), and V8
 * backtracks: an unbounded run of one atom costs quadratic time on a near-miss (`\w+@` over a
 * 50 KB word: 0.8 s), a repeated group holding an unbounded repetition exponential time
 * (`(?:a+)+b` over 26 a's: 2 s). Either stalls the worker thread until the watchdog kills it,
 * export after export, so a pack with one is refused at load. Allowed: bounded runs ({0,63}) and
 * an unbounded repetition of a group whose body is bounded (the built-in e-mail rule's
 * `(?:\.label)*`). A heuristic, not a proof: overlapping alternatives (`(?:a|ab){0,40}`) pass.
 */
export function dangerousRepetition(pattern: string): string | undefined {
  const n = pattern.length
  // Open groups: where each starts and whether its body repeats without bound.
  const groups: { start: number; unbounded: boolean }[] = [{ start: 0, unbounded: false }]
  let atom = 0
  let closed: { start: number; unbounded: boolean } | undefined // the group just closed, if the atom is one
  let i = 0
  while (i < n) {
    const c = pattern[i]!
    let q: string | undefined // an unbounded quantifier at i
    if (c === '*' || c === '+') q = c
    else if (c === '{') q = /^\{\d+,\}/.exec(pattern.slice(i))?.[0]
    if (q !== undefined) {
      if (closed === undefined || closed.unbounded) return pattern.slice(atom, i + q.length)
      groups.at(-1)!.unbounded = true
      closed = undefined
      i += q.length
      continue
    }
    if (c === '{') {
      const bounded = /^\{\d+(?:,\d+)?\}/.exec(pattern.slice(i))?.[0]
      if (bounded !== undefined) {
        i += bounded.length // a bounded quantifier: the atom stays the same
        continue
      }
    }
    if (c === '?') {
      i++ // optional, or lazy: bounded either way
      continue
    }
    closed = undefined
    atom = i
    if (c === '\\') i += 2
    else if (c === '[') {
      let j = i + 1
      if (pattern[j] === '^') j++
      while (j < n && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : 1
      i = j + 1
    } else if (c === '(') {
      groups.push({ start: i, unbounded: false })
      i += pattern[i + 1] === '?' ? 2 : 1
    } else if (c === ')' && groups.length > 1) {
      closed = groups.pop()!
      atom = closed.start
      if (closed.unbounded) groups.at(-1)!.unbounded = true
      i++
    } else i++
  }
  return undefined
}

export class RulePack {
  readonly name: string
  readonly version: string
  readonly source: string
  readonly types: readonly TypeDef[]
  readonly rules: readonly CompiledRule[]
  /** Rule labels ("id@version") by CompiledRule.counter / FieldRule.counter. */
  readonly labels: readonly string[]
  /** Per type index: its field-name rule, if any. */
  readonly fieldRules: readonly (FieldRule | undefined)[]
  // TS-private rather than #private: views made by withFieldHints (Object.create) share them.
  private readonly typeIndexMap = new Map<string, number>()
  private readonly fieldMemo = new Map<string, number>()
  private readonly combinedMemo = new Map<number, CombinedScan>()
  /**
   * Every field rule's names (exact, contains, words), any of them: a normalized key holding none
   * names no type. Checked first, so a key that is data (a pair's name: "Ada Lovelace", unique
   * per record, past the memo) costs one scan instead of the word split.
   */
  private readonly fieldNames: RegExp = /(?!)/
  /** Distinct required literals of the rules (CompiledRule.literal indexes this). */
  readonly literals: readonly string[]

  constructor(doc: unknown, source: string) {
    this.source = source
    if (doc === null || typeof doc !== 'object') throw new RulePackError(`${source}: expected a JSON object`)
    const d = doc as { pack?: unknown; version?: unknown; types?: unknown; rules?: unknown; fields?: unknown }
    // The name travels in the x-dlp header (`rules=<pack>@<version>`): a character a header cannot
    // carry (non-Latin-1, CR/LF) crashed the worker thread on every export; ";" "=" "@" and
    // spaces would break the header's grammar.
    if (typeof d.pack !== 'string' || !PACK_NAME.test(d.pack)) throw new RulePackError(`${source}: pack: expected a name of 1-64 letters, digits, ".", "_" or "-"`)
    if (typeof d.version !== 'string' || !/^\d+\.\d+(\.\d+)?$/.test(d.version)) throw new RulePackError(`${source}: version: expected "major.minor[.patch]"`)
    this.name = d.pack
    this.version = d.version
    if (d.types === null || typeof d.types !== 'object') throw new RulePackError(`${source}: types: expected an object`)
    const types: TypeDef[] = []
    for (const [name, def] of Object.entries(d.types as Record<string, { risk?: unknown }>)) {
      if (!/^[a-z][a-z0-9_]{0,31}$/.test(name)) throw new RulePackError(`${source}: types.${name}: expected a lower-case name of letters, digits and "_"`)
      const risk = def?.risk
      if (risk !== 'low' && risk !== 'medium' && risk !== 'high') throw new RulePackError(`${source}: types.${name}.risk: expected "low", "medium" or "high"`)
      this.typeIndexMap.set(name, types.length)
      types.push({ name, index: types.length, risk })
    }
    if (types.length > 31) throw new RulePackError(`${source}: types: at most 31 types`)
    this.types = types
    if (!Array.isArray(d.rules) || d.rules.length === 0) throw new RulePackError(`${source}: rules: expected a non-empty list`)
    const ids = new Set<string>()
    const literals: string[] = []
    this.rules = (d.rules as (RawRule | null)[]).map((r, i) => {
      const at = `${source}: rules[${i}]`
      if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new RulePackError(`${at}: expected an object`)
      if (typeof r.id !== 'string' || r.id === '') throw new RulePackError(`${at}.id: expected a rule id`)
      if (ids.has(r.id)) throw new RulePackError(`${at}.id: duplicate rule id "${r.id}"`)
      ids.add(r.id)
      if (typeof r.version !== 'string' || r.version === '') throw new RulePackError(`${at}.version: expected a version`)
      const type = typeof r.type === 'string' ? this.typeIndexMap.get(r.type) : undefined
      if (type === undefined) throw new RulePackError(`${at}.type: expected one of ${[...this.typeIndexMap.keys()].join(', ')}`)
      if (typeof r.pattern !== 'string') throw new RulePackError(`${at}.pattern: expected a regular expression`)
      // Rules share one combined expression, so flags apply as inline modifiers: (?i:…). Other
      // flags (u, v, g…) cannot be scoped to one rule; a flag left unread would silently change
      // what a rule finds (a case-insensitive rule that is not: values leave undetected).
      if (r.flags !== undefined && (typeof r.flags !== 'string' || !/^(?!.*(.).*\1)[ims]*$/.test(r.flags))) throw new RulePackError(`${at}.flags: expected any of "i", "m", "s" (each once)`)
      const pattern = typeof r.flags === 'string' && r.flags !== '' ? `(?${r.flags}:${r.pattern})` : r.pattern
      let sticky: RegExp
      try {
        sticky = new RegExp(pattern, 'y')
      } catch (err) {
        throw new RulePackError(`${at}.pattern: ${(err as Error).message}`)
      }
      const dangerous = dangerousRepetition(r.pattern)
      if (dangerous !== undefined) throw new RulePackError(`${at}.pattern: "${dangerous}" repeats without bound what can itself vary (catastrophic backtracking on long values); give it a bound, e.g. {1,64}`)
      // Capture groups would shift the combined expression's group numbers.
      if ((new RegExp(`${pattern}|`).exec('')?.length ?? 1) !== 1) throw new RulePackError(`${at}.pattern: use non-capturing groups (?:…) only`)
      const validator = r.validator === undefined ? () => true : own(VALIDATORS, r.validator)
      if (validator === undefined) throw new RulePackError(`${at}.validator: expected one of ${Object.keys(VALIDATORS).join(', ')}`)
      const ctx = r.context
      const ex = r.exclude
      const lit = requiredLiteral(pattern)
      let literal = lit === undefined ? -1 : literals.indexOf(lit)
      if (lit !== undefined && literal === -1 && literals.length < 8) literal = literals.push(lit) - 1
      return {
        id: r.id,
        version: r.version,
        label: `${r.id}@${r.version}`,
        counter: i,
        type,
        validator,
        pattern,
        sticky,
        contextWords: ctx?.words === undefined ? undefined : stringList(ctx.words, `${at}.context.words`),
        contextWindow: typeof ctx?.window === 'number' ? ctx.window : 32,
        contextRequired: ctx?.required === true,
        excludeWords: ex?.words === undefined ? undefined : stringList(ex.words, `${at}.exclude.words`),
        excludeWindow: typeof ex?.window === 'number' ? ex.window : 24,
        literal,
      }
    })
    this.literals = literals
    const fieldRules: (FieldRule | undefined)[] = types.map(() => undefined)
    if (d.fields !== undefined) {
      if (d.fields === null || typeof d.fields !== 'object' || Array.isArray(d.fields)) throw new RulePackError(`${source}: fields: expected an object`)
      for (const [name, f] of Object.entries(d.fields as Record<string, { rule?: unknown; version?: unknown; exact?: unknown; contains?: unknown; words?: unknown } | null>)) {
        if (name.startsWith('$')) continue
        if (f === null || typeof f !== 'object' || Array.isArray(f)) throw new RulePackError(`${source}: fields.${name}: expected an object`)
        const type = this.typeIndexMap.get(name)
        if (type === undefined) throw new RulePackError(`${source}: fields.${name}: not a type of this pack`)
        fieldRules[type] = {
          type,
          label: `${typeof f.rule === 'string' ? f.rule : `${name}.field`}@${typeof f.version === 'string' ? f.version : this.version}`,
          counter: this.rules.length + type,
          validator: own(FIELD_VALIDATORS, name),
          exact: new Set(stringList(f.exact ?? [], `${source}: fields.${name}.exact`)),
          contains: stringList(f.contains ?? [], `${source}: fields.${name}.contains`),
          words: new Set(stringList(f.words ?? [], `${source}: fields.${name}.words`)),
        }
      }
    }
    this.fieldRules = fieldRules
    const names = fieldRules.flatMap((f) => (f === undefined ? [] : [...f.exact, ...f.contains, ...f.words]))
    if (names.length > 0) this.fieldNames = new RegExp(names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'))
    // Rule labels by counter: value rules in order, then one slot per type for its field rule.
    this.labels = [...this.rules.map((r) => r.label), ...types.map((t) => fieldRules[t.index]?.label ?? `${t.name}.field`)]
  }

  static load(path: string): RulePack {
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      throw new RulePackError(`cannot read rule pack ${path}: ${(err as Error).message}`)
    }
    let doc: unknown
    try {
      doc = JSON.parse(text)
    } catch {
      throw new RulePackError(`${path}: not JSON`)
    }
    return new RulePack(doc, path)
  }

  typeIndex(name: string): number {
    return this.typeIndexMap.get(name) ?? -1
  }

  /** Bit mask of the types a JSON key or CSV header names (0: none). */
  fieldHint(key: string): number {
    let mask = this.fieldMemo.get(key)
    if (mask !== undefined) return mask
    mask = 0
    // Accents removed, not the letters that carry them: `teléfono` became `telfono` (no `telefon`)
    // and `tél` `tl`, while `hôtel` split into the words "h" and "tel" (a phone field).
    // (An ASCII key has no accents to remove.)
    const folded = ASCII.test(key) ? key : key.normalize('NFD').replace(/\p{M}/gu, '')
    const norm = folded.toLowerCase().replace(/[^a-z0-9]/g, '')
    // Every match below holds one of the names in `norm` (a word of the key, or the singular of
    // norm or of a word, is a run of its letters), so a key without any is none of them.
    if (norm !== '' && this.fieldNames.test(norm)) {
      // Words of camelCase, snake_case and kebab-case keys: only the whole key was compared, so a
      // bare SSN under `customerSsn` or a national number under `tel_no` was never read as one.
      // A plural names a list of the type's values (`{"ssns": ["123456789"]}`, `tels`,
      // `customerSsns`; an array's items take its key's hint): bare SSNs and national numbers
      // under one left readable.
      const words = (folded.match(KEY_WORD) ?? []).flatMap((w) => {
        const lower = w.toLowerCase()
        const one = singular(lower)
        return one === undefined ? [lower] : [lower, one]
      })
      const one = singular(norm) ?? norm
      for (const f of this.fieldRules) {
        if (f === undefined) continue
        if (f.exact.has(norm) || f.exact.has(one) || f.contains.some((c) => norm.includes(c)) || words.some((w) => f.words.has(w))) mask |= 1 << f.type
      }
    }
    if (this.fieldMemo.size < MAX_FIELD_MEMO) this.fieldMemo.set(key, mask)
    return mask
  }

  /**
   * This pack, with `extra` hints added to some keys: a GraphQL response keyed by aliases the
   * client chose (`{ entities { a: ssn } }` answers under "a") gets, for each alias, the hints
   * of the field names it stands for. Everything else is shared with this pack (one export's
   * view, not a copy).
   */
  withFieldHints(extra: ReadonlyMap<string, number>): RulePack {
    if (extra.size === 0) return this
    const view = Object.create(this) as RulePack
    Object.defineProperty(view, 'fieldHint', { value: (key: string): number => this.fieldHint(key) | (extra.get(key) ?? 0) })
    return view
  }

  /**
   * One global expression over the rules of the enabled types (bit mask), memoized. `absent`: bit
   * mask over `literals` of characters the text lacks; rules that need one of them are left out
   * (they cannot match anywhere in it, so the leftmost match among the rest is the same).
   */
  combined(enabled: number, absent = 0): CombinedScan {
    const key = enabled + absent * 2 ** 31
    let c = this.combinedMemo.get(key)
    if (c === undefined) {
      const rules = this.rules.filter((r) => (enabled & (1 << r.type)) !== 0 && (r.literal === -1 || (absent & (1 << r.literal)) === 0))
      const source = rules.length ? rules.map((r) => `(${r.pattern})`).join('|') : '(?!)'
      c = { regex: new RegExp(source, 'g'), rules }
      this.combinedMemo.set(key, c)
    }
    return c
  }
}
