// Grafana dashboards: current with their builder, well-formed, PromQL that Prometheus itself
// accepts (promtool), recording rules that exist, and the boards the issue asks for.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { describe, expect, it } from 'vitest'
import { renderDashboards } from '../../deploy/observability/dashboards/build.ts'
import { ROOT } from '../helpers/proxy.ts'
import { dashboardExprs, dashboards, ruleExprs, selectors, withoutGrafanaVariables } from './promql.ts'

const boards = dashboards(ROOT)

describe('deploy/observability/dashboards', () => {
  it('the committed JSON is what build.ts renders', () => {
    const rendered = renderDashboards()
    expect([...boards.keys()].sort()).toEqual([...rendered.keys()].sort())
    for (const [file, text] of rendered) expect(JSON.stringify(boards.get(file)), `${file}: run node deploy/observability/dashboards/build.ts`).toBe(JSON.stringify(JSON.parse(text)))
  })

  it('each board has a unique uid, a datasource variable, and panels that fit the 24-column grid without overlap', () => {
    const uids = new Set<string>()
    for (const [file, d] of boards) {
      expect(uids.has(d.uid), file).toBe(false)
      uids.add(d.uid)
      expect(d.templating.list[0]).toMatchObject({ name: 'datasource', type: 'datasource' })
      const cells = new Set<string>()
      for (const p of d.panels as unknown as { title: string; gridPos: { x: number; y: number; w: number; h: number }; datasource?: { uid: string } }[]) {
        expect(p.gridPos.x + p.gridPos.w, `${file} ${p.title}`).toBeLessThanOrEqual(24)
        for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++)
          for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
            expect(cells.has(`${x},${y}`), `${file} "${p.title}" overlaps another panel`).toBe(false)
            cells.add(`${x},${y}`)
          }
        if (p.datasource) expect(p.datasource.uid).toBe('${datasource}')
      }
    }
  })

  it('every panel query is valid PromQL for Prometheus (promtool) and its grammar (lezer-promql)', () => {
    const exprs = dashboardExprs(ROOT)
    expect(exprs.length).toBeGreaterThan(40)
    for (const e of exprs) expect(selectors(e.expr).errors, e.where).toEqual([])
    // promtool parses recording rules with the real Prometheus parser.
    const dir = mkdtempSync(join(tmpdir(), 'igw-dash-'))
    try {
      const file = join(dir, 'panels.yaml')
      writeFileSync(file, stringify({ groups: [{ name: 'panels', rules: exprs.map((e, i) => ({ record: `panel:q${i}`, expr: withoutGrafanaVariables(e.expr) })) }] }))
      const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' })
      expect(r.stdout + r.stderr).toMatch(new RegExp(`SUCCESS: ${exprs.length} rules found`))
      // ...and it is live: a broken query is refused.
      writeFileSync(file, stringify({ groups: [{ name: 'panels', rules: [{ record: 'panel:bad', expr: 'sum by (route (rate(igw_requests_total[5m]))' }] }] }))
      expect(spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' }).status).not.toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('every recording rule a panel reads is defined in alerts.yaml', () => {
    const { recorded } = ruleExprs(ROOT)
    const missing = dashboardExprs(ROOT).flatMap((e) => selectors(e.expr).selectors.filter((s) => s.metric.includes(':') && !recorded.has(s.metric)).map((s) => `${e.where}: ${s.metric}`))
    expect(missing).toEqual([])
  })

  it('has the boards the issue asks for, each reading the metrics it is about', () => {
    const reads = (file: string) => new Set(dashboardExprs(ROOT).filter((e) => e.where.startsWith(file)).flatMap((e) => selectors(e.expr).selectors.map((s) => s.metric)))
    const titles = (file: string) => boards.get(file)!.panels.map((p) => p.title).join(' | ')
    // SLA per tier/tenant: availability, p95, error budget remaining, burn rate.
    expect(titles('igw-sla.json')).toMatch(/Availability.*Error budget remaining.*Burn rate.*p95.*tier.*tenant/s)
    for (const m of ['igw_requests_total', 'igw_request_duration_seconds_bucket', 'igw:request_error_ratio:rate1h', 'igw:subscription_delivery_p95:rate5m', 'igw_budget_used_ratio']) expect(reads('igw-sla.json').has(m), m).toBe(true)
    // Cost controls: quota usage, rejections, budget %.
    for (const m of ['igw_quota_rejections_total', 'igw_budget_used_ratio', 'igw_qos_drops_total']) expect(reads('igw-cost-controls.json').has(m), m).toBe(true)
    // Cache: hit % per persisted ID, p95 delta vs uncached.
    for (const m of ['igw:cache_hit_ratio:rate15m', 'igw_cache_requests_total', 'igw:upstream_latency_p95:rate5m']) expect(reads('igw-cache.json').has(m), m).toBe(true)
    expect(titles('igw-cache.json')).toMatch(/per persisted operation.*delta vs uncached/s)
    // Subscriptions: active, delivery p95, gaps, drops.
    for (const m of ['igw_subscriptions_active', 'igw_subscription_delivery_seconds_bucket', 'igw_replay_gaps_total', 'igw_qos_drops_total']) expect(reads('igw-subscriptions.json').has(m), m).toBe(true)
    // DLP actions.
    expect(reads('igw-dlp.json').has('igw_dlp_actions_total')).toBe(true)
    // Control plane: API, push with ACK/NACK, audit, signed plugin uploads and refusals.
    for (const m of ['igw_control_plane_requests_total', 'igw_control_plane_proxies_connected', 'igw_control_plane_acks_total', 'igw_control_plane_audit_appends_total', 'igw_plugin_uploads_total', 'igw_plugin_upload_rejections_total']) expect(reads('igw-control-plane.json').has(m), m).toBe(true)
  })
})
