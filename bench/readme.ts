// `npm run bench:readme`: rewrites the README's benchmark section from bench/results/*.json|md,
// so the table in the README is always the one the last run wrote (a summary of every target,
// then each scenario's full table). Run it after `npm run bench`.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { RESULTS, ROOT, type ScenarioResult } from './lib/harness.ts'

const BEGIN = '<!-- bench:begin -->'
const END = '<!-- bench:end -->'
// Scenario order in the README: the data path first, then filters, then the control plane.
const ORDER = ['passthrough', 'floor', 'quota', 'cache', 'dlp', 'subscriptions', 'control-plane']

const names = readdirSync(RESULTS)
  .filter((f) => f.endsWith('.json'))
  .map((f) => f.slice(0, -5))
  .sort((a, b) => (ORDER.indexOf(a) + 1 || 99) - (ORDER.indexOf(b) + 1 || 99))
const summary = ['| scenario | target | measured | goal | met | run |', '| --- | --- | --- | --- | --- | --- |']
const details: string[] = []
for (const name of names) {
  const res = JSON.parse(readFileSync(join(RESULTS, `${name}.json`), 'utf8')) as ScenarioResult & { environment: { date: string } }
  for (const t of res.targets ?? []) summary.push(`| ${name} | ${t.name} | ${t.value} | ${t.target} | ${t.pass ? 'yes' : '**no**'} | ${res.environment.date.slice(0, 10)} |`)
  const md = readFileSync(join(RESULTS, `${name}.md`), 'utf8').trim().replace(/^### .*\n/, '')
  details.push(`<details><summary><b>${name}</b> (<code>npm run bench -- ${name}</code>)</summary>\n\n${md}\n\n</details>`)
}
const section = [BEGIN, '', ...summary, '', ...details.flatMap((d) => [d, '']), END].join('\n')
const path = join(ROOT, 'README.md')
const readme = readFileSync(path, 'utf8')
const a = readme.indexOf(BEGIN)
const b = readme.indexOf(END)
if (a === -1 || b === -1) throw new Error(`README.md lacks the ${BEGIN} … ${END} markers`)
writeFileSync(path, readme.slice(0, a) + section + readme.slice(b + END.length))
console.log(`README.md: ${names.length} scenarios, ${summary.length - 2} targets`)
