// `npm run bench [-- scenario ...]`: runs bench/scenarios/<name>.ts (all by default) and writes
// bench/results/<name>.json + .md. Scenarios run one at a time: they share two cores.
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, writeResult, type ScenarioResult } from './lib/harness.ts'

export interface Scenario {
  name: string
  description: string
  run(): Promise<ScenarioResult>
}

const dir = join(ROOT, 'bench/scenarios')
const wanted = process.argv.slice(2)
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.ts'))
  .sort()
const picked = wanted.length ? files.filter((f) => wanted.includes(f.replace(/\.ts$/, ''))) : files
if (wanted.length && picked.length !== wanted.length) {
  console.error(`unknown scenario; available: ${files.map((f) => f.replace(/\.ts$/, '')).join(', ')}`)
  process.exit(2)
}
for (const f of picked) {
  const mod = (await import(join(dir, f))) as { scenario: Scenario }
  console.error(`\n== ${mod.scenario.name}: ${mod.scenario.description}`)
  const result = await mod.scenario.run()
  console.log(writeResult(result))
}
process.exit(0)
