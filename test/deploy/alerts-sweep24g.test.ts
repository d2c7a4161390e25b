// deploy/observability/alerts.yaml under the real promtool, sweep 24g:
//  - IgwConfigReloadRejected was `increase(igw_config_reload_failures_total[10m]) > 0`: it
//    resolved ten minutes after the refusal while the bad ConfigMap stayed and the proxy still ran
//    the older document. It now follows igw_config_last_reload_successful (0 from a refusal until
//    a document applies; the proxy side is in test/proxy/lifecycle.test.ts).
//  - igw_jwt_key_files_stale{route} (a changed JWT key file that does not load: the new key's
//    tokens are refused 401) had no alert. IgwJwtKeyFilesStale.
import { describe, expect, it } from 'vitest'
import { promtoolTest, type AlertCase } from '../helpers/promtool.ts'


/** IgwConfigReloadRejected for a proxy. */
const rejected = (instance: string) => ({
  exp_labels: { severity: 'ticket', instance, job: 'igw' },
  exp_annotations: {
    summary: `${instance} runs an older config document than it was given`,
    description:
      'The file or pushed snapshot failed validation or could not be built (log: "config reload rejected", naming the path and reason), or a restarted worker thread could not build the running version (/readyz workers.staleConfig; log: "worker thread could not build the running config version", retried). Resolves once every thread runs the latest document.',
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
  const R = 'IgwConfigReloadRejected'
  const ok = (instance: string, values: string) => [{ series: `igw_config_last_reload_successful{instance="${instance}",job="igw"}`, values }]

  it('a bad ConfigMap that stays keeps the ticket open for an hour; the fix resolves it', () => {
    // Refused at minute 5, fixed at minute 70.
    const r = promtoolTest(ok('igw-0', '1x4 0x65 1x15'), [at('4m', R), at('6m', R, rejected('igw-0')), at('60m', R, rejected('igw-0')), at('72m', R)])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })

  it('a proxy that refused its pushed head at boot (serving its last-known-good) is alerted on at once', () => {
    const r = promtoolTest(ok('igw-2', '0x60'), [at('0m', R, rejected('igw-2')), at('50m', R, rejected('igw-2'))])
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
