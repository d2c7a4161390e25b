// subscriptions: the subscription hub under load. 5,000 subscriptions over 1,000 graphql-
// transport-ws connections (tiers 20/30/50 by tenant), 100 events/s from the backend over 10
// channels, each event fanned out to every subscription of its channel (one upstream
// subscription per tenant and channel: 30 upstream for 5,000 clients). Backend, igw and the load
// generator are separate processes on the same machine.
// env: BENCH_DURATION (s, default 60), SUB_CONNECTIONS (1000), SUB_PER_CONN (5), SUB_RATE (100),
// SUB_CHANNELS (10), SUB_WORKERS (1)
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import type { Scenario } from '../run.ts'
import { readFileSync } from 'node:fs'
import { ROOT, rssBytes, sleep, startIgw, startPeer } from '../lib/harness.ts'

const DURATION = Number(process.env.BENCH_DURATION ?? 60)
const CONNECTIONS = Number(process.env.SUB_CONNECTIONS ?? 1000)
const PER_CONN = Number(process.env.SUB_PER_CONN ?? 5)
const RATE = Number(process.env.SUB_RATE ?? 100)
const CHANNELS = Number(process.env.SUB_CHANNELS ?? 10)
const WORKERS = Number(process.env.SUB_WORKERS ?? 1)
const TIERS = ['gold', 'silver', 'bronze'] as const

interface GeneratorResult {
  connections: number
  subscriptions: number
  seconds: number
  deliveries: number
  deliveriesPerSec: number
  p50: number
  p95: number
  p99: number
  max: number
  received: Record<string, number>
  gaps: Record<string, number>
  missed: Record<string, number>
  closes: Record<string, number>
  errors: number
  generatorMaxLoopLagMs: number
}

/** utime + stime of a process, in clock ticks (1/100 s). */
function cpuTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return Number(fields[11]) + Number(fields[12])
  } catch {
    return Number.NaN
  }
}

/** Prometheus-style histogram_quantile over the cumulative buckets of one series set. */
export function histogramQuantile(text: string, name: string, q: number, labelFilter = ''): number {
  const buckets = new Map<number, number>()
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_bucket{`) || !line.includes(labelFilter)) continue
    const le = /le="([^"]+)"/.exec(line)![1]!
    const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le)
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)))
  }
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0])
  const total = sorted[sorted.length - 1]?.[1] ?? 0
  if (total === 0) return Number.NaN
  const want = q * total
  let prevBound = 0
  let prevCount = 0
  for (const [bound, count] of sorted) {
    if (count >= want) {
      if (!Number.isFinite(bound)) return prevBound * 1000
      const frac = count === prevCount ? 1 : (want - prevCount) / (count - prevCount)
      return Math.round((prevBound + (bound - prevBound) * frac) * 1000 * 100) / 100
    }
    prevBound = bound
    prevCount = count
  }
  return Number.NaN
}

function metric(text: string, name: string, labelFilter = ''): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ') || !line.includes(labelFilter)) continue
    sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/** Runs the load generator; resolves with its result while it is still connected (call `done`). */
function runGenerator(url: string, onReady: () => void): Promise<{ result: GeneratorResult; done: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bench/peers/subscription-clients.ts')], {
      env: { ...process.env, URL: url, CONNECTIONS: String(CONNECTIONS), SUBS: String(PER_CONN), CHANNELS: String(CHANNELS), WARMUP_SEC: '3', DURATION_SEC: String(DURATION) },
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    const done = async () => {
      child.stdin.end()
      await exited
    }
    let buf = ''
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      let i
      while ((i = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (line.startsWith('ready')) onReady()
        else if (line.startsWith('{')) resolve({ result: JSON.parse(line) as GeneratorResult, done })
      }
    })
    child.once('exit', (code) => code !== 0 && reject(new Error(`load generator exited ${code}`)))
    child.stdin.on('error', () => undefined)
  })
}

export const scenario: Scenario = {
  name: 'subscriptions',
  description: `${CONNECTIONS * PER_CONN} subscriptions over ${CONNECTIONS} graphql-transport-ws connections (tiers 20/30/50), ${RATE} events/s over ${CHANNELS} channels fanned out to every subscriber of the channel, ${DURATION} s, igw ${WORKERS} worker(s); backend, igw and load generator in separate processes.`,
  async run() {
    const backend = await startPeer('subscription-backend.ts', [], { RATE: String(RATE), CHANNELS: String(CHANNELS) })
    const igw = await startIgw({
      workers: WORKERS,
      tenants: { 'gold-t': { tier: 'gold' }, 'silver-t': { tier: 'silver' }, 'bronze-t': { tier: 'bronze' } },
      subscriptions: { cursorKey: 'bench-only-cursor-key-of-at-least-32-chars' },
      routes: [{ name: 'graphql', upstream: `http://127.0.0.1:${backend.port}`, websocket: { mode: 'terminate' }, filters: [{ name: 'tenant' }, { name: 'subscriptions' }] }],
    })
    const pid = igw.child.pid!
    await sleep(1_000)
    const rssIdle = rssBytes(pid)
    let rssSubscribed = Number.NaN
    let cpuStart = 0
    let tStart = 0
    const samples: number[] = []
    let sampler: NodeJS.Timeout | undefined
    const { result, done } = await runGenerator(`ws://127.0.0.1:${igw.port}/graphql`, () => {
      rssSubscribed = rssBytes(pid)
      cpuStart = cpuTicks(pid)
      tStart = performance.now()
      sampler = setInterval(() => samples.push(rssBytes(pid)), 1_000)
    })
    const cpuShare = (cpuTicks(pid) - cpuStart) / 100 / ((performance.now() - tStart) / 1000)
    clearInterval(sampler)
    const metrics = await (await fetch(`http://127.0.0.1:${igw.adminPort}/metrics`)).text()
    await done()
    await igw.stop()
    await backend.stop()

    const rssLoaded = samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length : Number.NaN
    const rssPeak = samples.length ? Math.max(...samples) : Number.NaN
    const perConn = (rss: number) => Math.round(((rss - rssIdle) / Math.max(1, result.connections) / 1024) * 10) / 10
    const upstreams = metric(metrics, 'igw_subscription_upstreams')
    const active = metric(metrics, 'igw_subscriptions_active')
    const gw = (q: number, tier = '') => histogramQuantile(metrics, 'igw_subscription_delivery_seconds', q, tier ? `tier="${tier}"` : '')
    const rows: Record<string, string | number>[] = TIERS.map((tier) => ({
      tier,
      'deliveries/s': Math.round(result.received[tier]! / result.seconds),
      'gateway p50 ms': gw(0.5, tier),
      'gateway p95 ms': gw(0.95, tier),
      'gateway p99 ms': gw(0.99, tier),
      'drops (gateway)': metric(metrics, 'igw_qos_drops_total', `tier="${tier}"`),
      'gap notices (client)': result.gaps[tier]!,
    }))
    rows.push({
      tier: 'all',
      'deliveries/s': result.deliveriesPerSec,
      'end-to-end p50 ms': result.p50,
      'end-to-end p95 ms': result.p95,
      'end-to-end p99 ms': result.p99,
      'gateway p50 ms': gw(0.5),
      'gateway p95 ms': gw(0.95),
      'gateway p99 ms': gw(0.99),
      'drops (gateway)': metric(metrics, 'igw_qos_drops_total'),
      'gap notices (client)': result.gaps.gold! + result.gaps.silver! + result.gaps.bronze!,
    })
    return {
      scenario: 'subscriptions',
      description: this.description,
      columns: ['tier', 'deliveries/s', 'end-to-end p50 ms', 'end-to-end p95 ms', 'end-to-end p99 ms', 'gateway p50 ms', 'gateway p95 ms', 'gateway p99 ms', 'drops (gateway)', 'gap notices (client)'],
      rows,
      targets: [
        { name: 'end-to-end delivery p95 (ms), backend emit → client receive', value: result.p95, target: '≤ 25', pass: result.p95 <= 25 },
        { name: 'seed SLO: delivery p95 (ms)', value: result.p95, target: '≤ 250', pass: result.p95 <= 250 },
        { name: 'connections / subscriptions established', value: result.subscriptions, target: `${CONNECTIONS} / ${CONNECTIONS * PER_CONN}`, pass: result.connections === CONNECTIONS && result.subscriptions === CONNECTIONS * PER_CONN },
        { name: 'events dropped (all tiers)', value: metric(metrics, 'igw_qos_drops_total'), target: '0 at this load', pass: metric(metrics, 'igw_qos_drops_total') === 0 },
      ],
      notes: [
        `memory per connection (${PER_CONN} subscriptions each): ${perConn(rssSubscribed)} KiB once subscribed, ${perConn(rssLoaded)} KiB average under load (${perConn(rssPeak)} KiB at the peak) — igw RSS ${Math.round(rssIdle / 1048576)} MB idle, ${Math.round(rssSubscribed / 1048576)} MB subscribed, ${Math.round(rssLoaded / 1048576)} MB average under load`,
        `igw CPU during the window: ${Math.round(cpuShare * 100)} % of one core (user + system; writing one WebSocket frame per delivery is mostly system time)`,
        `dedup: ${active} client subscriptions on ${upstreams} upstream subscriptions (ratio ${Math.round(active / Math.max(1, upstreams))}); ${result.deliveries} deliveries measured over ${result.seconds} s`,
        `end-to-end = backend emit → client receive (both clocks on this machine); gateway = igw_subscription_delivery_seconds (event received from upstream → written to the client socket)`,
        `client closes ${JSON.stringify(result.closes)}, errors ${result.errors}; load generator max event-loop lag ${result.generatorMaxLoopLagMs} ms (if high, the generator, not igw, limits the numbers)`,
        `backend, igw (${WORKERS} worker) and the load generator share the machine's cores; numbers taken while others run tests are noisy`,
      ],
    }
  },
}
