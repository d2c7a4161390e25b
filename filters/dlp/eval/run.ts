// `npm run dlp:eval`: precision and recall per type of the built-in rule pack (or the pack given
// as the first argument) over the fixed-seed labeled corpus. Exits 1 when a target is missed.
import { BUILTIN_RULE_PACK, RulePack } from '../rule-pack.ts'
import { CORPUS_SEED } from './corpus.ts'
import { evaluate, TARGETS } from './evaluate.ts'

const pack = RulePack.load(process.argv[2] ?? BUILTIN_RULE_PACK)
const r = evaluate(pack)
const pct = (x: number) => `${(x * 100).toFixed(2)}%`
console.log(`rule pack ${r.pack}; corpus seed ${CORPUS_SEED}: ${r.records} records, ${r.labels} labeled values, ${r.hardNegatives} hard negatives`)
console.log('')
console.log('| type | support | TP | FP | FN | precision | recall | targets met |')
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |')
let ok = true
for (const t of r.types) {
  const met = t.precision >= TARGETS.precision && t.recall >= TARGETS.recall
  ok &&= met
  console.log(`| ${t.type} | ${t.support} | ${t.tp} | ${t.fp} | ${t.fn} | ${pct(t.precision)} | ${pct(t.recall)} | ${met ? 'yes' : 'NO'} |`)
}
console.log('')
console.log(`targets: precision >= ${pct(TARGETS.precision)}, recall >= ${pct(TARGETS.recall)} for every type: ${ok ? 'met' : 'MISSED'}`)
if (r.examples.length) {
  console.log('\nexamples of misses (fn) and false alarms (fp):')
  for (const e of r.examples) console.log(`  ${e.type} ${e.kind} [${e.field}] ${e.value}`)
}
process.exit(ok ? 0 : 1)
