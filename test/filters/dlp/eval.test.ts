// CI enforces the rule pack's targets on the fixed-seed labeled corpus (npm run dlp:eval prints
// the same numbers as a table).
import { describe, expect, it } from 'vitest'
import { generateCorpus } from '../../../filters/dlp/eval/corpus.ts'
import { evaluate, TARGETS } from '../../../filters/dlp/eval/evaluate.ts'

describe('rule pack v1.2 on the labeled corpus', () => {
  const corpus = generateCorpus()
  const result = evaluate(undefined, corpus)

  it('the corpus is large, reproducible and full of hard negatives', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(5000)
    expect(result.hardNegatives).toBeGreaterThanOrEqual(2000)
    expect(generateCorpus().slice(0, 50)).toEqual(corpus.slice(0, 50))
    const text = JSON.stringify(corpus)
    for (const needle of ['000-', '666-', 'logo@2x.png', 'https://', 'order ', 'declined', 'version ']) expect(text).toContain(needle)
  })

  it.each(result.types.map((t) => [t.type, t] as const))('%s: recall >= 0.99 and precision >= 0.98', (_type, t) => {
    expect(t.support).toBeGreaterThan(300)
    expect(t.recall).toBeGreaterThanOrEqual(TARGETS.recall)
    expect(t.precision).toBeGreaterThanOrEqual(TARGETS.precision)
  })

  it('a weaker pack is caught: dropping the Luhn validator costs precision', async () => {
    const { RulePack, BUILTIN_RULE_PACK } = await import('../../../filters/dlp/rule-pack.ts')
    const { readFileSync } = await import('node:fs')
    const doc = JSON.parse(readFileSync(BUILTIN_RULE_PACK, 'utf8')) as { rules: { id: string; validator?: string }[] }
    for (const r of doc.rules) if (r.id === 'credit_card.value' || r.id === 'ssn_us.value') delete r.validator
    const weak = evaluate(new RulePack(doc, 'weak'), corpus)
    expect(weak.types.find((t) => t.type === 'credit_card')!.precision).toBeLessThan(TARGETS.precision)
    expect(weak.types.find((t) => t.type === 'ssn_us')!.precision).toBeLessThan(TARGETS.precision)
  })
})
