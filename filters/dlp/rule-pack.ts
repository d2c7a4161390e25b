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
  readonly #typeIndex = new Map<string, number>()
  readonly #fieldMemo = new Map<string, number>()
  readonly #combined = new Map<number, CombinedScan>()
  /** Distinct required literals of the rules (CompiledRule.literal indexes this). */
  readonly literals: readonly string[]

  constructor(doc: unknown, source: string) {
    this.source = source
    if (doc === null || typeof doc !== 'object') throw new RulePackError(`${source}: expected a JSON object`)
    const d = doc as { pack?: unknown; version?: unknown; types?: unknown; rules?: unknown; fields?: unknown }
    if (typeof d.pack !== 'string' || d.pack === '') throw new RulePackError(`${source}: pack: expected a name`)
    if (typeof d.version !== 'string' || !/^\d+\.\d+(\.\d+)?$/.test(d.version)) throw new RulePackError(`${source}: version: expected "major.minor[.patch]"`)
    this.name = d.pack
    this.version = d.version
    if (d.types === null || typeof d.types !== 'object') throw new RulePackError(`${source}: types: expected an object`)
    const types: TypeDef[] = []
    for (const [name, def] of Object.entries(d.types as Record<string, { risk?: unknown }>)) {
      if (!/^[a-z][a-z0-9_]{0,31}$/.test(name)) throw new RulePackError(`${source}: types.${name}: expected a lower-case name of letters, digits and "_"`)
      const risk = def?.risk
      if (risk !== 'low' && risk !== 'medium' && risk !== 'high') throw new RulePackError(`${source}: types.${name}.risk: expected "low", "medium" or "high"`)
      this.#typeIndex.set(name, types.length)
      types.push({ name, index: types.length, risk })
    }
    if (types.length > 31) throw new RulePackError(`${source}: types: at most 31 types`)
    this.types = types
    if (!Array.isArray(d.rules) || d.rules.length === 0) throw new RulePackError(`${source}: rules: expected a non-empty list`)
    const ids = new Set<string>()
    const literals: string[] = []
    this.rules = (d.rules as RawRule[]).map((r, i) => {
      const at = `${source}: rules[${i}]`
      if (typeof r.id !== 'string' || r.id === '') throw new RulePackError(`${at}.id: expected a rule id`)
      if (ids.has(r.id)) throw new RulePackError(`${at}.id: duplicate rule id "${r.id}"`)
      ids.add(r.id)
      if (typeof r.version !== 'string' || r.version === '') throw new RulePackError(`${at}.version: expected a version`)
      const type = typeof r.type === 'string' ? this.#typeIndex.get(r.type) : undefined
      if (type === undefined) throw new RulePackError(`${at}.type: expected one of ${[...this.#typeIndex.keys()].join(', ')}`)
      if (typeof r.pattern !== 'string') throw new RulePackError(`${at}.pattern: expected a regular expression`)
      let sticky: RegExp
      try {
        sticky = new RegExp(r.pattern, 'y')
      } catch (err) {
        throw new RulePackError(`${at}.pattern: ${(err as Error).message}`)
      }
      // Capture groups would shift the combined expression's group numbers.
      if ((new RegExp(`${r.pattern}|`).exec('')?.length ?? 1) !== 1) throw new RulePackError(`${at}.pattern: use non-capturing groups (?:…) only`)
      const validator = r.validator === undefined ? () => true : VALIDATORS[String(r.validator)]
      if (validator === undefined) throw new RulePackError(`${at}.validator: expected one of ${Object.keys(VALIDATORS).join(', ')}`)
      const ctx = r.context
      const ex = r.exclude
      const lit = requiredLiteral(r.pattern)
      let literal = lit === undefined ? -1 : literals.indexOf(lit)
      if (lit !== undefined && literal === -1 && literals.length < 8) literal = literals.push(lit) - 1
      return {
        id: r.id,
        version: r.version,
        label: `${r.id}@${r.version}`,
        counter: i,
        type,
        validator,
        pattern: r.pattern,
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
      for (const [name, f] of Object.entries(d.fields as Record<string, { rule?: unknown; version?: unknown; exact?: unknown; contains?: unknown }>)) {
        if (name.startsWith('$')) continue
        const type = this.#typeIndex.get(name)
        if (type === undefined) throw new RulePackError(`${source}: fields.${name}: not a type of this pack`)
        fieldRules[type] = {
          type,
          label: `${typeof f.rule === 'string' ? f.rule : `${name}.field`}@${typeof f.version === 'string' ? f.version : this.version}`,
          counter: this.rules.length + type,
          validator: FIELD_VALIDATORS[name],
          exact: new Set(stringList(f.exact ?? [], `${source}: fields.${name}.exact`)),
          contains: stringList(f.contains ?? [], `${source}: fields.${name}.contains`),
        }
      }
    }
    this.fieldRules = fieldRules
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
    return this.#typeIndex.get(name) ?? -1
  }

  /** Bit mask of the types a JSON key or CSV header names (0: none). */
  fieldHint(key: string): number {
    let mask = this.#fieldMemo.get(key)
    if (mask !== undefined) return mask
    mask = 0
    const norm = key.toLowerCase().replace(/[^a-z0-9]/g, '')
    if (norm !== '') {
      for (const f of this.fieldRules) {
        if (f === undefined) continue
        if (f.exact.has(norm) || f.contains.some((c) => norm.includes(c))) mask |= 1 << f.type
      }
    }
    if (this.#fieldMemo.size < MAX_FIELD_MEMO) this.#fieldMemo.set(key, mask)
    return mask
  }

  /**
   * One global expression over the rules of the enabled types (bit mask), memoized. `absent`: bit
   * mask over `literals` of characters the text lacks; rules that need one of them are left out
   * (they cannot match anywhere in it, so the leftmost match among the rest is the same).
   */
  combined(enabled: number, absent = 0): CombinedScan {
    const key = enabled + absent * 2 ** 31
    let c = this.#combined.get(key)
    if (c === undefined) {
      const rules = this.rules.filter((r) => (enabled & (1 << r.type)) !== 0 && (r.literal === -1 || (absent & (1 << r.literal)) === 0))
      const source = rules.length ? rules.map((r) => `(${r.pattern})`).join('|') : '(?!)'
      c = { regex: new RegExp(source, 'g'), rules }
      this.#combined.set(key, c)
    }
    return c
  }
}
