// Shared bench plumbing: start processes (backend, igw via its public CLI, peers), drive load
// with autocannon, sample RSS, and write results as JSON + a markdown table.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { stringify } from 'yaml'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
// BENCH_RESULTS: write somewhere else (CI's smoke run keeps the committed results untouched).
export const RESULTS = process.env.BENCH_RESULTS ?? join(ROOT, 'bench/results')

export interface Proc {
  child: ChildProcess
  port: number
  adminPort?: number
  stop(): Promise<void>
}

/** Spawn a process and wait until a line of its stdout matches `ready` (which yields the port). */
export async function spawnReady(cmd: string, args: string[], ready: (line: string) => { port: number; adminPort?: number } | undefined, env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  const found = await new Promise<{ port: number; adminPort?: number }>((resolve, reject) => {
    let buf = ''
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let i
      while ((i = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        lines.push(line)
        const r = ready(line)
        if (r) resolve(r)
      }
    })
    child.stderr!.on('data', (d: Buffer) => lines.push(d.toString()))
    child.once('exit', (code) => reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${lines.slice(-20).join('\n')}`)))
  })
  // keep draining stdout so a chatty process never blocks on a full pipe
  child.stdout!.resume()
  return {
    child,
    ...found,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await once(child, 'exit')
      clearTimeout(t)
    },
  }
}

/** `igw proxy` through the public CLI with a config document. */
export async function startIgw(config: Record<string, unknown>, extraArgs: string[] = []): Promise<Proc> {
  const dir = mkdtempSync(join(tmpdir(), 'igw-bench-'))
  const path = join(dir, 'igw.yaml')
  writeFileSync(path, stringify({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, log: { level: 'warn', access: { enabled: false } }, ...config }))
  return spawnReady(process.execPath, [join(ROOT, 'bin/igw.js'), 'proxy', '--config', path, ...extraArgs], (line) => {
    try {
      const j = JSON.parse(line) as { msg?: string; listen?: string; admin?: string }
      if (j.msg === 'igw proxy listening') return { port: Number(j.listen!.split(':').pop()), adminPort: Number(j.admin!.split(':').pop()) }
    } catch {}
    return undefined
  })
}

/** A bench-owned helper script in bench/peers that prints "listening <port>". */
export function startPeer(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  return spawnReady(process.execPath, [join(ROOT, 'bench/peers', script), ...args], (line) => {
    const m = /^listening (\d+)/.exec(line)
    return m ? { port: Number(m[1]) } : undefined
  }, env)
}

export function rssBytes(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024
  } catch {
    return Number.NaN
  }
}

/** CPU seconds (user + system, all threads) a process has used so far. */
export function cpuSeconds(pid: number): number {
  return procStat(pid)?.cpuSeconds ?? 0 // 0: gone
}

/** From /proc/<pid>/stat: CPU seconds so far (user + system, and each), and the parent pid; undefined when gone. */
export function procStat(pid: number): { cpuSeconds: number; userSeconds: number; systemSeconds: number; ppid: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // after "pid (comm) "
    const user = Number(f[11]) / 100 // USER_HZ
    const system = Number(f[12]) / 100
    return { cpuSeconds: user + system, userSeconds: user, systemSeconds: system, ppid: Number(f[1]) }
  } catch {
    return undefined
  }
}

/** A process and its direct children (nginx's master and its workers). */
export function processTree(pid: number): number[] {
  const pids = [pid]
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ')) if (c) pids.push(Number(c))
    }
  } catch {}
  return pids
}

/** CPU seconds of a process and its direct children. */
export function cpuTreeSeconds(pid: number): number {
  const t = cpuTreeSplit(pid)
  return t.user + t.system
}

/** User and system CPU seconds of a process and its direct children. */
export function cpuTreeSplit(pid: number): { user: number; system: number } {
  let user = 0
  let system = 0
  for (const p of processTree(pid)) {
    const st = procStat(p)
    user += st?.userSeconds ?? 0
    system += st?.systemSeconds ?? 0
  }
  return { user, system }
}

/** The CPUs this process may run on (Cpus_allowed_list: "0-3,6"), expanded; [] when unknown. */
export function allowedCpus(): { list: string; cpus: number[] } {
  try {
    const list = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]!
    const cpus: number[] = []
    for (const part of list.split(',')) {
      const [a, b] = part.split('-').map(Number)
      for (let c = a!; c <= (b ?? a!); c++) cpus.push(c)
    }
    return { list, cpus }
  } catch {
    return { list: '', cpus: [] }
  }
}

/**
 * Pins every thread of a process and of its direct children to the given CPUs (`taskset`, from
 * util-linux). Threads created later inherit the affinity of the thread that creates them.
 * False when taskset is missing or refused.
 */
export function pinTree(pid: number, cpuList: string): boolean {
  let ok = true
  for (const p of processTree(pid)) {
    const r = spawnSync('taskset', ['-a', '-p', '-c', cpuList, String(p)], { stdio: 'ignore' })
    ok &&= r.status === 0
  }
  return ok
}

export interface LoadOptions {
  url: string
  connections?: number
  durationSec?: number
  method?: 'GET' | 'POST'
  body?: string
  headers?: Record<string, string>
  /** Paced load: requests per second across all connections. */
  rate?: number
  /** Per-request bodies/paths, for key distributions (autocannon requests[]). */
  requests?: autocannon.Request[]
}

export interface LoadResult {
  rps: number
  p50: number
  p90: number
  p99: number
  errors: number
  non2xx: number
  total: number
  throughputMBs: number
}

export async function load(opts: LoadOptions): Promise<LoadResult> {
  const r = await autocannon({
    url: opts.url,
    connections: opts.connections ?? 50,
    duration: opts.durationSec ?? 10,
    method: opts.method ?? 'GET',
    body: opts.body,
    headers: opts.headers,
    overallRate: opts.rate,
    requests: opts.requests,
  })
  return {
    rps: Math.round(r.requests.average),
    p50: r.latency.p50,
    p90: r.latency.p90,
    p99: r.latency.p99,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    total: r.requests.total,
    throughputMBs: Math.round((r.throughput.average / 1e6) * 100) / 100,
  }
}

export function environment(): Record<string, unknown> {
  return { date: new Date().toISOString(), node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, platform: `${process.platform}-${process.arch}` }
}

export interface ScenarioResult {
  scenario: string
  description: string
  columns: string[]
  rows: Record<string, string | number>[]
  notes: string[]
  targets?: { name: string; value: number; target: string; pass: boolean }[]
}

export function writeResult(res: ScenarioResult): string {
  mkdirSync(RESULTS, { recursive: true })
  const env = environment()
  writeFileSync(join(RESULTS, `${res.scenario}.json`), `${JSON.stringify({ ...res, environment: env }, null, 2)}\n`)
  const md = [
    `### ${res.scenario}`,
    '',
    res.description,
    '',
    `| ${res.columns.join(' | ')} |`,
    `| ${res.columns.map(() => '---').join(' | ')} |`,
    ...res.rows.map((row) => `| ${res.columns.map((c) => String(row[c] ?? '')).join(' | ')} |`),
    '',
    ...(res.targets?.length ? ['| target | measured | goal | met |', '| --- | --- | --- | --- |', ...res.targets.map((t) => `| ${t.name} | ${t.value} | ${t.target} | ${t.pass ? 'yes' : 'no'} |`), ''] : []),
    ...res.notes.map((n) => `- ${n}`),
    '',
    `_${env.date}, Node ${env.node}, ${env.cpus} × ${env.cpu}_`,
    '',
  ].join('\n')
  writeFileSync(join(RESULTS, `${res.scenario}.md`), md)
  return md
}

export function ratio(a: number, b: number): number {
  return b === 0 ? 0 : Math.round((a / b) * 100) / 100
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms))
}

/** nginx binary when installed (Debian puts it in /usr/sbin). */
export function nginxBinary(): string | undefined {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) {
    try {
      readFileSync(p)
      return p
    } catch {}
  }
  return undefined
}

/** A free loopback port (for servers that cannot report the one they bound, like nginx). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net')
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

export async function waitForPort(port: number, ms = 5_000): Promise<void> {
  const { connect } = await import('node:net')
  const t0 = Date.now()
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => (s.destroy(), resolve(true)))
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() - t0 > ms) throw new Error(`nothing listens on ${port}`)
    await sleep(50)
  }
}

/** nginx as a reverse proxy with upstream keep-alive (the configuration its docs recommend). */
export async function startNginx(upstreamPort: number, workers: number, extraHttp = '', extraLocation = ''): Promise<Proc | undefined> {
  const bin = nginxBinary()
  if (!bin) return undefined
  const dir = mkdtempSync(join(tmpdir(), 'igw-nginx-'))
  const port = await freePort()
  const conf = `
worker_processes ${workers};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  keepalive_requests 100000;
  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive 128; }
  ${extraHttp}
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      ${extraLocation}
    }
  }
}`
  writeFileSync(join(dir, 'nginx.conf'), conf)
  return spawnOnPort(bin, ['-p', dir, '-c', join(dir, 'nginx.conf')], port, 'SIGQUIT') // QUIT: graceful
}

/** redis-server from the Debian package on a free loopback port, no persistence. */
export async function startRedis(): Promise<Proc> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'igw-bench-redis-'))
  return spawnOnPort('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], port)
}

/** A server told its port on the command line: ready once the port accepts connections. */
async function spawnOnPort(cmd: string, args: string[], port: number, stopSignal: NodeJS.Signals = 'SIGTERM'): Promise<Proc> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  await waitForPort(port)
  return {
    child,
    port,
    stop: async () => {
      if (child.exitCode !== null) return
      child.kill(stopSignal)
      await once(child, 'exit')
    },
  }
}

/** The p-quantile of `values` in ms, rounded to 0.01 (NaN when there are none). */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = Array.from(values).sort((a, b) => a - b)
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 100) / 100
}

export interface PacedRun {
  /** Latency of request i from its intended send time, ms. */
  fromIntended: Float64Array
  /** Latency of request i from the moment it was actually issued (the client's timer lateness excluded), ms. */
  fromSent: Float64Array
  /** What `classify` made of each response; undefined where the request failed. */
  classes: (string | undefined)[]
  errors: number
}

/**
 * Open-loop paced load: request i is due at t0 + i/rate whatever the earlier ones are doing,
 * latency measured from that intended time (no coordinated omission). autocannon's overallRate
 * releases each second's budget in a burst, which measures its own queueing.
 */
export async function pacedRun(opts: {
  url: string
  rate: number
  total: number
  method?: 'GET' | 'POST'
  headers?: Record<string, string>
  /** One body for every request, or request i's body. */
  body?: string | readonly string[]
  classify?: (headers: Record<string, string | string[] | undefined>) => string
  isError?: (status: number) => boolean
}): Promise<PacedRun> {
  const { Pool } = await import('undici')
  const u = new URL(opts.url)
  const pool = new Pool(u.origin, { connections: 64 })
  const { total, classify } = opts
  const isError = opts.isError ?? ((status: number) => status >= 400)
  const interval = 1000 / opts.rate
  const fromIntended = new Float64Array(total)
  const fromSent = new Float64Array(total)
  const classes: (string | undefined)[] = new Array(total)
  let done = 0
  let errors = 0
  const t0 = performance.now()
  await new Promise<void>((resolve) => {
    if (total === 0) return resolve()
    let i = 0
    const fire = () => {
      const now = performance.now()
      while (i < total && t0 + i * interval <= now) {
        const idx = i++
        const intended = t0 + idx * interval
        const sent = performance.now()
        const body = typeof opts.body === 'string' || opts.body === undefined ? opts.body : opts.body[idx]
        pool
          .request({ path: u.pathname + u.search, method: opts.method ?? 'GET', body, headers: opts.headers })
          .then(async (r) => {
            await r.body.dump()
            if (classify) classes[idx] = classify(r.headers)
            if (isError(r.statusCode)) errors++
          })
          .catch(() => errors++)
          .finally(() => {
            const end = performance.now()
            fromIntended[idx] = end - intended
            fromSent[idx] = end - sent
            if (++done === total) resolve()
          })
      }
      if (i < total) setTimeout(fire, Math.max(0, t0 + i * interval - performance.now()))
    }
    fire()
  })
  await pool.close()
  return { fromIntended, fromSent, classes, errors }
}

/** pacedRun at one body for `durationSec`, summarized as percentiles from the intended send time. */
export async function pacedLoad(opts: { url: string; rate: number; durationSec: number; method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string> }): Promise<{ p50: number; p90: number; p99: number; max: number; sent: number; errors: number }> {
  const total = Math.round(opts.rate * opts.durationSec)
  const { fromIntended: lat, errors } = await pacedRun({ ...opts, total })
  return { p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), max: percentile(lat, 1), sent: total, errors }
}
