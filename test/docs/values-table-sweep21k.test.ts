// docs/deploy.md's values-layer table ("every tunable", deploy/k8s/values/values.env) against the
// file: it left out JWT_ISSUER and JWT_AUDIENCE (the ingress tenant filter's jwt.issuer/audience,
// which an operator must set or every token is a 401), and gave GRAPH_UPSTREAM_URL no default
// though the file ships one.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/proxy.ts'

const values = new Map(
  readFileSync(join(ROOT, 'deploy/k8s/values/values.env'), 'utf8')
    .split('\n')
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()] as const),
)

/** value name → documented default, from the table under "### The values layer". */
function documented(): Map<string, string> {
  const text = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8')
  const lines = text.slice(text.indexOf('### The values layer')).split('\n')
  const start = lines.findIndex((l) => l.startsWith('| value | default |'))
  const out = new Map<string, string>()
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break
    const [names, defaults] = line.slice(2).split(' | ')
    const n = names!.split(', ').map((x) => x.replaceAll('`', ''))
    const d = defaults!.split(', ').map((x) => x.replaceAll('`', ''))
    n.forEach((name, i) => out.set(name, d[i] ?? ''))
  }
  return out
}

describe('docs/deploy.md values table', () => {
  it('lists every value of values.env with the default it ships', () => {
    const doc = documented()
    expect(values.size).toBeGreaterThan(10)
    const wrong = [...values].filter(([name, v]) => doc.get(name) !== v).map(([name, v]) => `${name}: file ${v}, documented ${doc.get(name) ?? '(missing)'}`)
    expect(wrong).toEqual([])
  })

  it('lists no value the file does not hold', () => {
    expect([...documented().keys()].filter((name) => !values.has(name))).toEqual([])
  })
})
