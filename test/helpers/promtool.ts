// promtool's rule unit tests on the shipped deploy/observability/alerts.yaml, for the alert tests.
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { ROOT } from './proxy.ts'

export interface AlertCase {
  eval_time: string
  alertname: string
  exp_alerts: { exp_labels: Record<string, string>; exp_annotations: Record<string, string> }[]
}

/** Runs promtool's rule unit tests on the shipped alerts.yaml with these series and expectations. */
export function promtoolTest(series: { series: string; values: string }[], cases: AlertCase[]): { ok: boolean; out: string } {
  const dir = mkdtempSync(join(tmpdir(), 'igw-promtool-'))
  try {
    copyFileSync(join(ROOT, 'deploy/observability/alerts.yaml'), join(dir, 'alerts.yaml'))
    writeFileSync(join(dir, 't.yaml'), stringify({ rule_files: ['alerts.yaml'], evaluation_interval: '1m', tests: [{ interval: '1m', input_series: series, alert_rule_test: cases }] }))
    const r = spawnSync('promtool', ['test', 'rules', 't.yaml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 })
    if (r.error) throw new Error(`promtool not runnable (${r.error.message}): run deploy/ci/install-tools.sh`)
    return { ok: r.status === 0, out: r.stdout + r.stderr }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
