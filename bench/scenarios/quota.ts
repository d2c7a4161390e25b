// quota: what the quota filter costs. Same payload, connections and backend, one run: igw with
// request-id + tenant (the baseline), plus the quota filter deciding locally (shared memory),
// plus the quota filter deciding in Redis (one Lua script per request). Limits are high enough
// that nothing is refused: the decision itself is measured, not the cheaper 429 path.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Scenario } from '../run.ts'
import { freePort, load, ratio, startIgw, startPeer, waitForPort, type Proc } from '../lib/harness.ts'

const BODY = JSON.stringify({ query: 'query Entity($id: ID!) { entity(id: $id) { id name email updatedAt } }', variables: { id: '42' }, operationName: 'Entity' })
const DURATION = Number(process.env.BENCH_DURATION ?? 5)
// Several short alternating rounds and the median: other work on the machine hits every target alike.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4)
const CONNECTIONS = 50

async function startRedisServer(): Promise<Proc> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'igw-bench-redis-'))
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' })
  await waitForPort(port)
  return {
    child,
    port,
    stop: async () => {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      await once(child, 'exit')
    },
  }
}

async function metricsOf(proc: Proc): Promise<string> {
  return (await fetch(`http://127.0.0.1:${proc.adminPort}/metrics`)).text()
}

function sum(text: string, name: string, filter = ''): number {
  let s = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (filter && !line.includes(filter))) continue
    const rest = line.slice(name.length)
    if (rest[0] === '{' || rest[0] === ' ') s += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return s
}

export const scenario: Scenario = {
  name: 'quota',
  description: `POST GraphQL (${BODY.length} B) through igw (1 worker), ${CONNECTIONS} connections, ${DURATION} s per target, ${ROUNDS} alternating rounds (median): request-id + tenant, + quota (local), + quota (Redis).`,
  async run() {
    const backend = await startPeer('backend.ts')
    const redis = await startRedisServer()
    const upstream = `http://127.0.0.1:${backend.port}`
    const limits = { rate: 1e9, burst: 1e9, limitPerDay: 1e15 }
    const budget = { units: 1e15, window: '30d', bucket: '1h' }
    const igw = (quota: boolean, withRedis: boolean, withBudget: boolean) =>
      startIgw({
        workers: 1,
        tenants: { acme: { tier: 'gold' } },
        ...(withRedis ? { redis: { url: `redis://127.0.0.1:${redis.port}` } } : {}),
        quotas: { tenants: { acme: { graphql: limits, ...(withBudget ? { budget } : {}) } } },
        routes: [{ name: 'graphql', upstream, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'tenant' }, ...(quota ? [{ name: 'quota' }] : [])] }],
      })
    const targets: [string, () => Promise<Proc>][] = [
      ['request-id + tenant (baseline)', () => igw(false, false, false)],
      ['+ quota, local (bucket + daily)', () => igw(true, false, false)],
      ['+ quota, local (bucket + daily + budget)', () => igw(true, false, true)],
      ['+ quota, Redis (bucket + daily)', () => igw(true, true, false)],
      ['+ quota, Redis (bucket + daily + budget)', () => igw(true, true, true)],
    ]
    const runs = new Map<string, { rps: number[]; p50: number[]; p99: number[]; errors: number; fallbacks: number; redisDecisions: number; decisionP99: string }>()
    const opts = (port: number) => ({ url: `http://127.0.0.1:${port}/graphql`, method: 'POST' as const, body: BODY, headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, connections: CONNECTIONS })
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, start] of targets) {
        const proc = await start()
        await load({ ...opts(proc.port), durationSec: 2 }) // warm-up: JIT, pools, Redis script
        const r = await load({ ...opts(proc.port), durationSec: DURATION })
        const m = await metricsOf(proc)
        await proc.stop()
        const entry = runs.get(name) ?? { rps: [], p50: [], p99: [], errors: 0, fallbacks: 0, redisDecisions: 0, decisionP99: '' }
        entry.rps.push(r.rps)
        entry.p50.push(r.p50)
        entry.p99.push(r.p99)
        entry.errors += r.errors + r.non2xx
        entry.fallbacks += sum(m, 'igw_quota_redis_fallbacks_total')
        entry.redisDecisions += sum(m, 'igw_quota_decision_seconds_count', 'path="redis"')
        const total = sum(m, 'igw_quota_decision_seconds_count')
        if (total > 0) {
          // the smallest histogram bound holding 99% of decisions
          const bounds = [...m.matchAll(/igw_quota_decision_seconds_bucket\{le="([^"]+)"[^}]*\} (\d+)/g)]
          const byLe = new Map<string, number>()
          for (const [, le, n] of bounds) byLe.set(le!, (byLe.get(le!) ?? 0) + Number(n))
          const p99 = [...byLe.entries()].filter(([le]) => le !== '+Inf').sort((x, y) => Number(x[0]) - Number(y[0])).find(([, n]) => n >= total * 0.99)
          entry.decisionP99 = p99 ? `≤ ${Number(p99[0]) * 1000} ms` : '> 500 ms'
        }
        runs.set(name, entry)
      }
    }
    await redis.stop()
    await backend.stop()
    const median = (a: number[]) => {
      const sorted = [...a].sort((x, y) => x - y)
      const mid = sorted.length >> 1
      return Math.round(sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2)
    }
    const base = median(runs.get(targets[0]![0])!.rps)
    const rows: Record<string, string | number>[] = []
    for (const [name] of targets) {
      const e = runs.get(name)!
      const rps = median(e.rps)
      rows.push({
        target: name,
        'req/s': rps,
        'req/s per round': e.rps.join(' / '),
        'p50 ms': median(e.p50),
        'p99 ms': median(e.p99),
        'decision p99': e.decisionP99 || '—',
        overhead: `${Math.round((1 - rps / base) * 1000) / 10}%`,
        errors: e.errors,
        'Redis fallbacks': e.fallbacks,
      })
    }
    const overhead = (name: string) => Math.round((1 - median(runs.get(name)!.rps) / base) * 1000) / 10
    const local = overhead(targets[1]![0])
    const viaRedis = overhead(targets[3]![0])
    return {
      scenario: 'quota',
      description: this.description,
      columns: ['target', 'req/s', 'req/s per round', 'p50 ms', 'p99 ms', 'decision p99', 'overhead', 'errors', 'Redis fallbacks'],
      rows,
      targets: [
        { name: 'quota (local) req/s overhead vs baseline, %', value: local, target: '≤ 5', pass: local <= 5 },
        { name: 'quota (Redis) req/s overhead vs baseline, %', value: viaRedis, target: '≤ 15', pass: viaRedis <= 15 },
        { name: 'quota (local) ÷ baseline, req/s', value: ratio(median(runs.get(targets[1]![0])!.rps), base), target: '≥ 0.95', pass: local <= 5 },
      ],
      notes: [
        'Redis decisions: the decisions of one event-loop turn go as one EVALSHA on the worker\'s ioredis connection; "Redis fallbacks" counts requests the outage policy decided because Redis missed the 5 ms budget',
        'redis-server, the backend, autocannon and igw share the machine\'s cores: ratios matter, absolute numbers do not travel',
      ],
    }
  },
}
