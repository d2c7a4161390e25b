// What a PromQL expression reads, by Prometheus' own grammar (@prometheus-io/lezer-promql, the
// parser of the Prometheus UI): metric names and their label matchers. Grafana variables are
// replaced first so dashboard queries parse like the ones Prometheus will run.
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { parser } from '@prometheus-io/lezer-promql'
import { parse } from 'yaml'

export interface Selector {
  metric: string
  matchers: { label: string; op: string; value: string }[]
}

/** Grafana's $__rate_interval / $var / ${var} → something Prometheus accepts. */
export function withoutGrafanaVariables(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replace(/\$\{?[A-Za-z_]\w*\}?/g, 'x')
}

export function selectors(expr: string): { selectors: Selector[]; errors: string[] } {
  const text = withoutGrafanaVariables(expr)
  const tree = parser.parse(text)
  const out: Selector[] = []
  const errors: string[] = []
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(`syntax error at ${node.from}: ${text.slice(Math.max(0, node.from - 20), node.to + 20)}`)
      if (node.name !== 'VectorSelector') return
      const sel: Selector = { metric: '', matchers: [] }
      const id = node.node.getChild('Identifier')
      if (id) sel.metric = text.slice(id.from, id.to)
      const matchers = node.node.getChild('LabelMatchers')
      for (const m of matchers?.getChildren('UnquotedLabelMatcher') ?? []) {
        const label = m.getChild('LabelName')
        const op = m.getChild('MatchOp')
        const value = m.getChild('StringLiteral')
        if (!label || !op || !value) continue
        sel.matchers.push({ label: text.slice(label.from, label.to), op: text.slice(op.from, op.to), value: JSON.parse(text.slice(value.from, value.to)) as string })
      }
      out.push(sel)
    },
  })
  return { selectors: out, errors }
}

export interface RuleSource {
  where: string
  expr: string
}

const OBS = (root: string) => join(root, 'deploy/observability')

interface RuleFile {
  groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[]
}

export function ruleExprs(root: string): { exprs: RuleSource[]; recorded: Set<string> } {
  const doc = parse(readFileSync(join(OBS(root), 'alerts.yaml'), 'utf8')) as RuleFile
  const exprs: RuleSource[] = []
  const recorded = new Set<string>()
  for (const g of doc.groups)
    for (const r of g.rules) {
      exprs.push({ where: `alerts.yaml ${r.alert ?? r.record}`, expr: r.expr })
      if (r.record) recorded.add(r.record)
    }
  return { exprs, recorded }
}

interface DashboardJson {
  uid: string
  title: string
  panels: { title: string; type: string; targets?: { expr: string }[] }[]
  templating: { list: { name: string; query?: string | { query: string } }[] }
}

export function dashboards(root: string): Map<string, DashboardJson> {
  const dir = join(OBS(root), 'dashboards')
  return new Map(
    readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .map((f) => [f, JSON.parse(readFileSync(join(dir, f), 'utf8')) as DashboardJson]),
  )
}

export function dashboardExprs(root: string): RuleSource[] {
  const out: RuleSource[] = []
  for (const [file, d] of dashboards(root)) {
    for (const p of d.panels) for (const t of p.targets ?? []) out.push({ where: `${file} "${p.title}"`, expr: t.expr })
    for (const v of d.templating.list) {
      const q = typeof v.query === 'object' ? v.query.query : v.query
      const m = q !== undefined ? /^label_values\((\w+),\s*\w+\)$/.exec(q) : null
      if (m) out.push({ where: `${file} variable $${v.name}`, expr: m[1]! })
    }
  }
  return out
}

export interface MetricContract {
  owner: string
  type: 'counter' | 'gauge' | 'histogram'
  labels: string[]
  buckets?: string[]
}

export function metricContract(root: string): Record<string, MetricContract> {
  return (parse(readFileSync(join(OBS(root), 'metrics.yaml'), 'utf8')) as { metrics: Record<string, MetricContract> }).metrics
}

/** A raw series name → its family in the contract (histograms expose _bucket/_sum/_count). */
export function familyOf(metric: string, contract: Record<string, MetricContract>): string | undefined {
  if (contract[metric]) return metric
  const base = metric.replace(/_(bucket|sum|count)$/, '')
  return contract[base]?.type === 'histogram' ? base : undefined
}
