// deploy/observability/alerts.yaml under the real promtool, sweep 24g:
//  - IgwConfigReloadRejected was `increase(igw_config_reload_failures_total[10m]) > 0`: it
//    resolved ten minutes after the refusal while the bad ConfigMap stayed and the proxy still ran
//    the older document. It now lasts until a later document applies (igw_config_reloads_total
//    moves), and still says nothing when a refusal was followed by an apply.
//  - igw_jwt_key_files_stale{route} (a changed JWT key file that does not load: the new key's
//    tokens are refused 401) had no alert. IgwJwtKeyFilesStale.
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { afterAll, describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/proxy.ts'

const DIR = join(ROOT, 'deploy/observability')
const scratch = mkdtempSync(join(tmpdir(), 'igw-alerts24g-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

interface AlertCase {
  eval_time: string
  alertname: string
  exp_alerts: { exp_labels: Record<string, string>; exp_annotations: Record<string, string> }[]
}

/** Runs promtool's rule unit tests on the shipped alerts.yaml with these series and expectations. */
function promtoolTest(series: { series: string; values: string }[], cases: AlertCase[]): { ok: boolean; out: string } {
  const dir = mkdtempSync(join(scratch, 'promtool-'))
  copyFileSync(join(DIR, 'alerts.yaml'), join(dir, 'alerts.yaml'))
  writeFileSync(join(dir, 't.yaml'), stringify({ rule_files: ['alerts.yaml'], evaluation_interval: '1m', tests: [{ interval: '1m', input_series: series, alert_rule_test: cases }] }))
  const r = spawnSync('promtool', ['test', 'rules', 't.yaml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 })
  if (r.error) throw new Error(`promtool not runnable (${r.error.message}): run deploy/ci/install-tools.sh`)
  return { ok: r.status === 0, out: r.stdout + r.stderr }
}

/** IgwConfigReloadRejected for a proxy with `refused` documents refused since the last one applied. */
const rejected = (instance: string, refused = 1) => ({
  exp_labels: { severity: 'ticket', instance, job: 'igw' },
  exp_annotations: {
    summary: `${instance} refused a new config document and keeps running the previous one`,
    description: `The file or pushed snapshot failed validation or could not be built (${refused} refused since the last one applied); the proxy logs the exact path and reason ("config reload rejected"). Resolves once a document applies.`,
    runbook_url: 'docs/operate.md#igwconfigreloadrejected',
  },
})
const stale = (route: string) => ({
  exp_labels: { severity: 'ticket', instance: 'igw-0', job: 'igw', route },
  exp_annotations: {
    summary: `igw-0: route ${route} verifies JWTs with older keys: a changed key file does not load`,
    description: 'Tokens signed by a key the new file adds are refused 401 UNAUTHENTICATED until it loads (log: "tenant: a changed JWT key file cannot be loaded; the previous keys stay in use", naming the file and the reason).',
    runbook_url: 'docs/operate.md#igwjwtkeyfilesstale',
  },
})
const at = (eval_time: string, alertname: string, ...exp_alerts: AlertCase['exp_alerts']): AlertCase => ({ eval_time, alertname, exp_alerts })

describe('IgwConfigReloadRejected lasts as long as the proxy runs an older document than it was given', () => {
  const proxy = (instance: string, failures: string, reloads: string) => [
    { series: `igw_config_reload_failures_total{instance="${instance}",job="igw"}`, values: failures },
    { series: `igw_config_reloads_total{instance="${instance}",job="igw"}`, values: reloads },
  ]
  const R = 'IgwConfigReloadRejected'

  it('a bad ConfigMap that stays keeps the ticket open for an hour; the fix resolves it', () => {
    // Refused at minute 5 (after 3 applied reloads), fixed at minute 70.
    const r = promtoolTest(proxy('igw-0', '0x4 1x80', '3x69 4x15'), [at('4m', R), at('6m', R, rejected('igw-0')), at('60m', R, rejected('igw-0')), at('72m', R)])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })

  it('a refusal followed by an applied document is not alerted on; a later refusal is', () => {
    // Refused at 5, applied at 8 (the fixed document), refused again at 40 and retried (worker
    // refusals are retried and counted) with nothing applied since.
    const r = promtoolTest(proxy('igw-1', '0x4 1x35 2 3x40', '1x7 2x70'), [at('6m', R, rejected('igw-1')), at('10m', R), at('30m', R), at('45m', R, rejected('igw-1', 2)), at('75m', R, rejected('igw-1', 2))])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })

  it('a proxy that never applied a reload since its start and refused one runs its boot document', () => {
    // Refused a pushed head at boot (serving its last-known-good): failures 1, reloads 0.
    const r = promtoolTest(proxy('igw-2', '1x60', '0x60'), [at('1m', R, rejected('igw-2')), at('50m', R, rejected('igw-2'))])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })

  it('a restarted proxy (counters back to 0) that loaded its document is not alerted on', () => {
    // Refused at 5, restarted at 20 with the fixed file: both counters start again from 0.
    const r = promtoolTest(proxy('igw-3', '0x4 1x15 0x40', '2x19 0x40'), [at('10m', R, rejected('igw-3')), at('25m', R), at('55m', R)])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })
})

describe('IgwJwtKeyFilesStale', () => {
  const J = 'IgwJwtKeyFilesStale'
  it('fires per route while a changed key file does not load for 5 minutes, and resolves when it loads', () => {
    const r = promtoolTest(
      [
        { series: 'igw_jwt_key_files_stale{instance="igw-0",job="igw",route="api"}', values: '0x2 1x30 0x10' },
        // A key file written in two steps: stale for a minute.
        { series: 'igw_jwt_key_files_stale{instance="igw-0",job="igw",route="exports"}', values: '0x2 1 0x40' },
      ],
      [at('5m', J), at('10m', J, stale('api')), at('30m', J, stale('api')), at('36m', J)],
    )
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })
})
