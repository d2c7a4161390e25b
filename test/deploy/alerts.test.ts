// deploy/observability/alerts.yaml under the real promtool (Debian's prometheus package):
// syntax and PromQL checked, every alert unit-tested with series that fire it and series that
// must not, every alert with a runbook section in docs/operate.md.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse, stringify } from 'yaml'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../helpers/proxy.ts'

const DIR = join(ROOT, 'deploy/observability')
interface Rule {
  alert?: string
  record?: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}
const rules = (parse(readFileSync(join(DIR, 'alerts.yaml'), 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules)
const alerts = rules.filter((r) => r.alert !== undefined)

interface AlertTest {
  eval_time: string
  alertname: string
  exp_alerts: { exp_labels: Record<string, string> }[]
}
const TEST_FILES = ['alerts.test.yaml', 'alerts-regression.test.yaml']
const tests = TEST_FILES.flatMap((f) => (parse(readFileSync(join(DIR, f), 'utf8')) as { tests: { name: string; alert_rule_test: AlertTest[] }[] }).tests.flatMap((t) => t.alert_rule_test))

/**
 * promtool run in `cwd`, asynchronously: the promtool tests overlap (promtool evaluates on one
 * core). GOGC=200: about 15 % less CPU for these 7-hour series, at ~85 MB of heap instead of ~65.
 */
async function promtool(cwd: string, ...args: string[]): Promise<{ status: number | null; out: string }> {
  const child = spawn('promtool', args, { cwd, env: { ...process.env, GOGC: '200' }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const [status] = (await once(child, 'close').catch((err: Error) => {
    throw new Error(`promtool not runnable (${err.message}): run deploy/ci/install-tools.sh`)
  })) as [number | null]
  return { status, out }
}

/** A temporary directory holding a copy of alerts.yaml, for test files that name it. */
function withRules<T>(run: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'igw-alerts-'))
  copyFileSync(join(DIR, 'alerts.yaml'), join(dir, 'alerts.yaml'))
  return run(dir).finally(() => rmSync(dir, { recursive: true, force: true }))
}

// Concurrent: the promtool runs are independent (the shipped files are only read; anything
// written goes to a directory of the test's own); the other tests only read.
describe.concurrent('deploy/observability/alerts.yaml', () => {
  it('passes promtool check rules', async ({ expect }) => {
    const r = await promtool(DIR, 'check', 'rules', 'alerts.yaml')
    expect(r.out).toMatch(/SUCCESS: \d+ rules found/)
    expect(r.status).toBe(0)
  })

  it('passes its promtool unit tests (alerts.test.yaml, alerts-regression.test.yaml)', async ({ expect }) => {
    // Each file's test groups dealt round-robin into a file per CPU, all run at once: promtool
    // evaluates group after group on one core, each on its own (its own series and storage).
    await withRules(async (dir) => {
      const files = TEST_FILES.flatMap((f) => {
        const doc = parse(readFileSync(join(DIR, f), 'utf8')) as { tests: unknown[] }
        const n = Math.min(doc.tests.length, availableParallelism())
        return Array.from({ length: n }, (_, i) => {
          const tests = doc.tests.filter((_t, j) => j % n === i)
          const name = `${i}.${f}`
          writeFileSync(join(dir, name), stringify({ ...doc, tests }))
          return name
        })
      })
      const runs = await Promise.all(files.map(async (file) => ({ file, ...(await promtool(dir, 'test', 'rules', file)) })))
      for (const r of runs) {
        expect(r.out, r.file).not.toMatch(/FAILED/)
        expect(r.out.match(/SUCCESS/g), r.file).toHaveLength(1)
        expect(r.status, r.file).toBe(0)
      }
    })
  })

  it('promtool test rules is live: a wrong expectation fails, naming the alert', async ({ expect }) => {
    await withRules(async (dir) => {
      const text = readFileSync(join(DIR, 'alerts-regression.test.yaml'), 'utf8').replace('route: graphql }', 'route: steady }')
      writeFileSync(join(dir, 'wrong.test.yaml'), text)
      const r = await promtool(dir, 'test', 'rules', 'wrong.test.yaml')
      expect(r.status).not.toBe(0)
      expect(r.out).toMatch(/alertname: IgwReadLatencyRegression/)
    })
  })

  it("has every alert the seed names, and SLO burn-rate pairs (1h/5m, 6h/30m) for each SLO", () => {
    const names = alerts.map((a) => a.alert)
    for (const seed of ['IgwCacheHitRatioLow', 'IgwQuotaRejectionSpike', 'IgwReplayGapsHigh', 'IgwUnsignedPluginUpload', 'IgwReadLatencyRegression']) expect(names).toContain(seed)
    for (const slo of ['Availability', 'ReadLatency', 'SubscriptionDelivery']) {
      const fast = alerts.find((a) => a.alert === `Igw${slo}BurnRateFast`)!
      const slow = alerts.find((a) => a.alert === `Igw${slo}BurnRateSlow`)!
      expect(fast.expr).toMatch(/:rate1h > \(14\.4 \* [\d.]+\) and .*:rate5m > \(14\.4 \* [\d.]+\)/)
      expect(slow.expr).toMatch(/:rate6h > \(6 \* [\d.]+\) and .*:rate30m > \(6 \* [\d.]+\)/)
    }
    // p95 <= 250 ms is "at most 5 % slower than the 0.25 s bucket".
    expect(rules.find((r) => r.record === 'igw:subscription_delivery_slow_ratio:rate5m')!.expr).toContain('le="0.25"')
  })

  it('every alert is tested both firing and silent', () => {
    const untested: string[] = []
    for (const a of alerts) {
      const mine = tests.filter((t) => t.alertname === a.alert)
      if (!mine.some((t) => t.exp_alerts.length > 0)) untested.push(`${a.alert} never fires`)
      if (!mine.some((t) => t.exp_alerts.length === 0)) untested.push(`${a.alert} is never expected silent`)
    }
    expect(untested).toEqual([])
  })

  it('every alert has a severity, a summary and a runbook section in docs/operate.md', () => {
    const operate = readFileSync(join(ROOT, 'docs/operate.md'), 'utf8')
    const anchors = new Set([...operate.matchAll(/^#{2,4} (.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-')))
    for (const a of alerts) {
      expect(['page', 'ticket', 'security']).toContain(a.labels?.severity)
      expect(a.annotations?.summary, a.alert).toBeTruthy()
      const anchor = /#(.+)$/.exec(a.annotations?.runbook_url ?? '')?.[1]
      expect(anchor, a.alert).toBe(a.alert!.toLowerCase())
      expect(anchors.has(anchor!), `docs/operate.md has a "### ${a.alert}" section`).toBe(true)
    }
  })
})
