// docs/operate.md, sweep 24g: its "Metrics" list is where an operator looks up what igw exports, and
// it had fallen behind the metric contract (deploy/observability/metrics.yaml) that the alerts and
// dashboards read: 16 families were missing (the replay-log Redis gauge an alert pages on, the
// control plane's storage-full counter, the subscription operation metrics, …). Every family of
// the contract is now listed there, with the labels the contract gives it.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/proxy.ts'
import { metricContract } from './promql.ts'

const operate = readFileSync(join(ROOT, 'docs/operate.md'), 'utf8')
const section = /^### Metrics\n([\s\S]*?)^### /m.exec(operate)?.[1] ?? ''

/** Each `name` or `name{a,b="x"}` the section names, as the set of label names per mention. */
function mentions(text: string): Map<string, string[][]> {
  const out = new Map<string, string[][]>()
  for (const m of text.matchAll(/`(igw_\w+)(?:\{([^}`]*)\})?`/g)) {
    const labels = (m[2] ?? '').split(',').map((l) => l.split('=')[0]!.trim()).filter((l) => l !== '')
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), labels.sort()])
  }
  return out
}

describe('docs/operate.md "Metrics" lists the metric contract', () => {
  const contract = metricContract(ROOT)
  const listed = mentions(section)

  it('has the section', () => {
    expect(section.length).toBeGreaterThan(0)
    expect(Object.keys(contract).length).toBeGreaterThan(50)
  })

  it('names every family of deploy/observability/metrics.yaml, with its labels', () => {
    const wrong: string[] = []
    for (const [name, c] of Object.entries(contract)) {
      const seen = listed.get(name)
      const want = [...c.labels].sort().join(',')
      if (seen === undefined) wrong.push(`${name}: not listed`)
      else if (!seen.some((labels) => labels.join(',') === want)) wrong.push(`${name}: listed as {${seen.map((l) => l.join(',')).join('} / {')}}, the contract says {${want}}`)
    }
    expect(wrong).toEqual([])
  })
})
