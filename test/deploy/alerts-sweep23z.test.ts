// deploy/observability/alerts.yaml under the real promtool, sweep 23z:
//  - IgwConfigVersionSkew grouped proxies by namespace and scrape job only: every sidecar app of a
//    namespace shares one (the igw-sidecar PodMonitor, or an annotation-based job), so two apps
//    running their own documents (another APP_PORT) were skew for good. It now groups by the
//    Deployment the pod name carries, and still fires on skew within one Deployment.
//  - igw_upstream_retries_total{route} (requests sent upstream twice: the upstream closed the
//    connection before answering) had no alert: a backend closing keep-alive connections early or
//    crashing on requests went unseen while it did the work twice. IgwUpstreamRetriesHigh.
import { describe, expect, it } from 'vitest'
import { promtoolTest } from '../helpers/promtool.ts'


describe('IgwConfigVersionSkew', () => {
  const digest = (pod: string, d: string, values = '1x40') => ({ series: `igw_config_digest_info{namespace="shop",job="shop/igw-sidecar",pod="${pod}",digest="${d.repeat(16)}"}`, values })
  // Pod names as Kubernetes makes them for a Deployment: <deployment>-<pod-template-hash>-<5 random>.
  const twoApps = [digest('orders-api-7c9d8f6b5-x2k9p', 'a'), digest('orders-api-7c9d8f6b5-m4qzt', 'a'), digest('billing-api-5b6d7c8f9-r2w7n', 'b'), digest('billing-api-5b6d7c8f9-h6j2l', 'b')]

  it('two sidecar apps of one namespace, each on its own document, are not skew', () => {
    const r = promtoolTest(twoApps, [{ eval_time: '30m', alertname: 'IgwConfigVersionSkew', exp_alerts: [] }])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })

  it('one pod of an app left on an older document is skew of that app', () => {
    const r = promtoolTest([...twoApps.slice(0, 3), digest('billing-api-66f4d9b8c-k8v5s', 'b', '1x5 _x35'), digest('billing-api-66f4d9b8c-k8v5s', 'c', '_x5 1x35')], [
      { eval_time: '10m', alertname: 'IgwConfigVersionSkew', exp_alerts: [] },
      { eval_time: '30m', alertname: 'IgwConfigVersionSkew', exp_alerts: [
          {
            exp_labels: { severity: 'ticket', namespace: 'shop', job: 'shop/igw-sidecar', workload: 'billing-api' },
            exp_annotations: {
              summary: 'igw proxies of billing-api run 2 different configs',
              description: 'Some proxies did not take the latest config document (NACK, watch failure or stale ConfigMap).',
              runbook_url: 'docs/operate.md#igwconfigversionskew',
            },
          },
        ],
      },
    ])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })
})

describe('IgwUpstreamRetriesHigh', () => {
  const route = (name: string, perMin: number, retriesPerMin: number) => [
    { series: `igw_requests_total{route="${name}",status="200",tier="silver",instance="igw-0"}`, values: `0+${perMin}x60` },
    { series: `igw_upstream_retries_total{route="${name}",instance="igw-0"}`, values: `0+${retriesPerMin}x60` },
  ]

  it('fires when a steady share of a busy route is retried, not on the odd keep-alive race or a quiet route', () => {
    const r = promtoolTest([...route('dropping', 6000, 300), ...route('steady', 6000, 12), ...route('quiet', 120, 3)], [
      { eval_time: '10m', alertname: 'IgwUpstreamRetriesHigh', exp_alerts: [] },
      { eval_time: '40m', alertname: 'IgwUpstreamRetriesHigh', exp_alerts: [
          {
            exp_labels: { severity: 'ticket', route: 'dropping' },
            exp_annotations: {
              summary: 'Route dropping: 5% of requests were sent upstream twice',
              description:
                'The upstream of route dropping closes connections before answering; igw retries the safe requests once (log: "upstream closed the connection before answering; retrying once"). Keep upstreams.<name>.keepAliveTimeoutMs below the backend\'s keep-alive timeout, or find why the backend drops connections.',
              runbook_url: 'docs/operate.md#igwupstreamretrieshigh',
            },
          },
        ],
      },
    ])
    expect(r.out).toContain('SUCCESS')
    expect(r.ok).toBe(true)
  })
})
