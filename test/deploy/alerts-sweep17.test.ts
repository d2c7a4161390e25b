// deploy/observability/alerts.yaml under the real promtool, sweep 17:
//  - IgwRedisDown read "Redis was up within the hour" (max_over_time(igw_redis_up[1h])): one
//    hour into an outage the proxy's Redis was forgotten and the page resolved while Redis was
//    still down. It now lasts as long as the outage.
//  - a control plane out of disk space refuses every write (503 STORAGE_FULL, nothing kept) and
//    counts it in igw_control_plane_storage_full_total, which no alert read: the alert
//    IgwControlPlaneStorageFull fires on what a real control plane with a full disk exports
//    (a real tmpfs filled up; skipped where this process may not mount one).
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { metricSample, startTestControlPlane } from '../helpers/control-plane.ts'
import { promtoolTest } from '../helpers/promtool.ts'
import { canMountTmpfs, fillUntilFull, releaseMounts, tinyMount } from '../helpers/tmpfs.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-alerts17-'))
afterAll(() => {
  releaseMounts()
  rmSync(scratch, { recursive: true, force: true })
})

/** The annotations IgwRedisDown carries for `instance`. */
const redisDown = (instance: string) => [
  {
    exp_labels: { severity: 'page', instance },
    exp_annotations: {
      summary: `${instance} lost its Redis connection`,
      description: 'Shared limits, cache and replay fall back to the configured outage policy (fail-open, local-share or fail-closed).',
      runbook_url: 'docs/operate.md#igwredisdown',
    },
  },
]

describe('IgwRedisDown', () => {
  it('keeps paging through a Redis outage longer than an hour, and resolves when Redis is back', () => {
    const down = redisDown('igw-0')
    const r = promtoolTest(
      [
        // Two worker threads connected for 30 minutes, then Redis is down for three hours.
        { series: 'igw_redis_up{instance="igw-0"}', values: '2x30 0x180 2x10' },
        // A proxy without Redis never reports it up: never paged.
        { series: 'igw_redis_up{instance="sidecar-0"}', values: '0x220' },
        { series: 'igw_workers{instance="igw-0"}', values: '2x220' },
        { series: 'igw_workers{instance="sidecar-0"}', values: '2x220' },
      ],
      [
        { eval_time: '30m', alertname: 'IgwRedisDown', exp_alerts: [] },
        { eval_time: '35m', alertname: 'IgwRedisDown', exp_alerts: down },
        { eval_time: '95m', alertname: 'IgwRedisDown', exp_alerts: down }, // an hour into the outage
        { eval_time: '3h25m', alertname: 'IgwRedisDown', exp_alerts: down },
        { eval_time: '3h35m', alertname: 'IgwRedisDown', exp_alerts: [] },
      ],
    )
    expect(r.out).not.toMatch(/FAILED/)
    expect(r.ok).toBe(true)
  })

  it('a proxy that goes away during the outage is not paged for (its series ends)', () => {
    const r = promtoolTest(
      [
        { series: 'igw_redis_up{instance="igw-1"}', values: '1x10 0x5 _x60' },
        { series: 'igw_workers{instance="igw-1"}', values: '1x15 _x60' },
      ],
      [
        { eval_time: '14m', alertname: 'IgwRedisDown', exp_alerts: redisDown('igw-1') },
        { eval_time: '30m', alertname: 'IgwRedisDown', exp_alerts: [] },
      ],
    )
    expect(r.out).not.toMatch(/FAILED/)
    expect(r.ok).toBe(true)
  })
})

describe.skipIf(!canMountTmpfs)('IgwControlPlaneStorageFull', () => {
  it('fires on what a real control plane whose disk is full exports, and not on one with room', async () => {
    const mount = tinyMount('6m')!
    const cp = await startTestControlPlane({ dir: mkdtempSync(join(scratch, 'cp-')), db: `sqlite:${join(mount, 'igw.db')}` })
    let before: number | undefined
    let after: number | undefined
    try {
      const scrape = async () => metricSample(await (await fetch(`${cp.metricsUrl}/metrics`)).text(), 'igw_control_plane_storage_full_total')
      before = await scrape()
      fillUntilFull(join(mount, 'filler'))
      for (let i = 0; i < 2; i++) {
        const r = await cp.api(`/v1/persisted-documents/big${i}`, { method: 'PUT', body: JSON.stringify({ document: `# ${randomBytes(300 * 1024).toString('base64')}\n{ hello }` }) })
        expect(r.status).toBe(503)
        expect(((await r.json()) as { code: string }).code).toBe('STORAGE_FULL')
      }
      after = await scrape()
    } finally {
      await cp.close()
    }
    // Exported from the start at 0 (the first refusal is an increase), then counted.
    expect(before).toBe(0)
    expect(after).toBe(2)
    // Those scrapes as Prometheus would store them: cp-0 fills at minute 4; cp-1 never does.
    const r = promtoolTest(
      [
        { series: 'igw_control_plane_storage_full_total{instance="cp-0"}', values: `${before}x3 ${after}x20` },
        { series: 'igw_control_plane_storage_full_total{instance="cp-1"}', values: `${before}x23` },
      ],
      [
        { eval_time: '3m', alertname: 'IgwControlPlaneStorageFull', exp_alerts: [] },
        { eval_time: '5m', alertname: 'IgwControlPlaneStorageFull', exp_alerts: [
            {
              exp_labels: { severity: 'page', instance: 'cp-0' },
              exp_annotations: {
                summary: 'Control plane cp-0 refuses writes: its database is out of disk space',
                description: `${after} writes answered 503 STORAGE_FULL in 10 minutes; nothing of them was kept (log: "request failed: the database is out of disk space"). Free or grow the volume (PVC igw-control-plane-data, or the PostgreSQL disk); the same writes succeed once there is space.`,
                runbook_url: 'docs/operate.md#igwcontrolplanestoragefull',
              },
            },
          ],
        },
        { eval_time: '20m', alertname: 'IgwControlPlaneStorageFull', exp_alerts: [] },
      ],
    )
    expect(r.out).not.toMatch(/FAILED/)
    expect(r.ok).toBe(true)
  }, 60_000)
})
