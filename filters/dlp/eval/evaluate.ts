// Precision and recall of a rule pack per type over the labeled corpus, through the same code
// path exports take (ExportScanner.visit with field-name hints), with every type enabled.
import { BUILTIN_RULE_PACK, RulePack } from '../rule-pack.ts'
import { compileActions, ExportScanner } from '../scanner.ts'
import { generateCorpus, type CorpusRecord } from './corpus.ts'

export interface TypeScore {
  type: string
  support: number
  tp: number
  fp: number
  fn: number
  precision: number
  recall: number
}

export interface EvalResult {
  pack: string
  records: number
  labels: number
  hardNegatives: number
  types: TypeScore[]
  /** A few misses and false alarms per type, for whoever tunes the rules. */
  examples: { type: string; kind: 'fp' | 'fn'; value: string; field: string }[]
}

export function evaluate(pack: RulePack = RulePack.load(BUILTIN_RULE_PACK), corpus: CorpusRecord[] = generateCorpus()): EvalResult {
  const preset = Object.fromEntries(pack.types.map((t) => [t.name, 'redact']))
  const scanner = new ExportScanner(pack, compileActions(pack, preset), undefined)
  const score = new Map(pack.types.map((t) => [t.name, { type: t.name, support: 0, tp: 0, fp: 0, fn: 0, precision: 1, recall: 1 }]))
  const examples: EvalResult['examples'] = []
  let labels = 0
  let hard = 0
  for (const rec of corpus) {
    hard += rec.hardNegatives
    for (const [field, value] of Object.entries(rec.fields)) {
      const found: { type: string; value: string; rule: string }[] = []
      scanner.findings = found
      scanner.visit(value, pack.fieldHint(field))
      const expected = rec.labels.filter((l) => l.field === field)
      labels += expected.length
      const unmatched = [...found]
      for (const l of expected) {
        const s = score.get(l.type)!
        s.support++
        const i = unmatched.findIndex((f) => f.type === l.type && f.value === l.value)
        if (i === -1) {
          s.fn++
          if (examples.filter((e) => e.type === l.type && e.kind === 'fn').length < 5) examples.push({ type: l.type, kind: 'fn', value: l.value, field })
        } else {
          s.tp++
          unmatched.splice(i, 1)
        }
      }
      for (const f of unmatched) {
        const s = score.get(f.type)!
        s.fp++
        if (examples.filter((e) => e.type === f.type && e.kind === 'fp').length < 5) examples.push({ type: f.type, kind: 'fp', value: `${f.value} (${f.rule}) in "${value}"`, field })
      }
    }
  }
  scanner.findings = undefined
  const types = [...score.values()].map((s) => ({ ...s, precision: s.tp + s.fp === 0 ? 1 : s.tp / (s.tp + s.fp), recall: s.support === 0 ? 1 : s.tp / s.support }))
  return { pack: `${pack.name}@${pack.version}`, records: corpus.length, labels, hardNegatives: hard, types, examples }
}

export const TARGETS = { recall: 0.99, precision: 0.98 }
