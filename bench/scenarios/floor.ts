// floor: where a Node proxy's time goes, and how low it can go. Every target gets a core of its
// own (taskset); the load generator and the backend share the other one. A single-threaded
// target is then bound by its own thread, so its req/s is about 1 ÷ (its CPU per request) and
// the req/s ratio of two targets is the inverse ratio of their CPU per request. The rows go from
// "no proxy work at all" (a reply straight from a socket, the same reply from node:http) through
// a bare node:http + undici relay to igw, http-proxy and nginx, with user and system CPU apart.
import type { Scenario } from '../run.ts'
import { allowedCpus, cpuTreeSplit, load, pinTree, procStat, ratio, startIgw, startNginx, startPeer, type Proc } from '../lib/harness.ts'

const BODY = JSON.stringify({ query: 'query Entity($id: ID!) { entity(id: $id) { id name email updatedAt } }', variables: { id: '42' }, operationName: 'Entity' })
const DURATION = Number(process.env.BENCH_DURATION ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = 50

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!
const round1 = (v: number) => Math.round(v * 10) / 10

export const scenario: Scenario = {
  name: 'floor',
  description: `POST GraphQL (${BODY.length} B) → 180 B JSON, ${CONNECTIONS} connections; each target pinned to a core of its own, load generator and backend on another; ${ROUNDS} rounds of ${DURATION} s per target, order reversed every other round, medians.`,
  async run() {
    // The runner (autocannon runs in this process) and everything it spawns from now on stay on
    // one CPU; each target moves to another. Undone at the end: later scenarios use every core.
    const allowed = allowedCpus()
    const [loadCpu, targetCpu] = allowed.cpus.map(String)
    const pinned = targetCpu !== undefined && pinTree(process.pid, loadCpu!)
    const backend = await startPeer('backend.ts')
    const upstream = `http://127.0.0.1:${backend.port}`
    const HTTP = 'node:http server, fixed reply (no upstream)'
    const SOCKET = 'net socket, fixed reply (no HTTP parsing)'
    const BARE = 'bare node:http + undici relay (no features)'
    const IGW = 'igw, empty chain, 1 worker'
    const HP = 'node http-proxy (keep-alive agent)'
    const NGINX = 'nginx (1 worker, upstream keepalive)'
    const starts: [string, () => Promise<Proc | undefined>][] = [
      [SOCKET, () => startPeer('socket-echo.ts')],
      [HTTP, () => startPeer('backend.ts')],
      [BARE, () => startPeer('bare-relay.ts', [upstream])],
      [IGW, () => startIgw({ workers: 1, tenants: { acme: {} }, routes: [{ name: 'graphql', upstream, type: 'graphql', filters: [] }] })],
      [HP, () => startPeer('http-proxy.ts', [upstream])],
      [NGINX, () => startNginx(backend.port, 1)],
    ]
    const procs = new Map<string, Proc>()
    const missing: string[] = []
    try {
      for (const [name, start] of starts) {
        const p = await start()
        if (p === undefined) missing.push(name)
        else {
          procs.set(name, p)
          if (pinned) pinTree(p.child.pid!, targetCpu!)
        }
      }
      const samples = new Map<string, { rps: number[]; user: number[]; system: number[]; loadBusy: number[]; errors: number }>()
      const names = [...procs.keys()]
      for (let round = 0; round < ROUNDS; round++) {
        for (const name of round % 2 === 0 ? names : [...names].reverse()) {
          const p = procs.get(name)!
          const opts = { url: `http://127.0.0.1:${p.port}/graphql`, method: 'POST' as const, body: BODY, headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, connections: CONNECTIONS }
          await load({ ...opts, durationSec: round === 0 ? Math.min(2, DURATION) : 1 }) // warm-up: JIT, pools
          const t0 = cpuTreeSplit(p.child.pid!)
          const l0 = (procStat(process.pid)?.cpuSeconds ?? 0) + (procStat(backend.child.pid!)?.cpuSeconds ?? 0)
          const w0 = performance.now()
          const r = await load({ ...opts, durationSec: DURATION })
          const wall = (performance.now() - w0) / 1000
          const t1 = cpuTreeSplit(p.child.pid!)
          const l1 = (procStat(process.pid)?.cpuSeconds ?? 0) + (procStat(backend.child.pid!)?.cpuSeconds ?? 0)
          const s = samples.get(name) ?? { rps: [], user: [], system: [], loadBusy: [], errors: 0 }
          s.rps.push(r.rps)
          s.user.push(((t1.user - t0.user) * 1e6) / Math.max(1, r.total))
          s.system.push(((t1.system - t0.system) * 1e6) / Math.max(1, r.total))
          s.loadBusy.push((l1 - l0) / wall)
          s.errors += r.errors + r.non2xx
          samples.set(name, s)
        }
      }
      const med = (name: string) => {
        const s = samples.get(name)
        if (s === undefined) return undefined
        const user = median(s.user)
        const system = median(s.system)
        return { rps: median(s.rps), user, system, cpu: user + system, loadBusy: median(s.loadBusy), errors: s.errors }
      }
      const hp = med(HP)
      const rows: Record<string, string | number>[] = names.map((name) => {
        const m = med(name)!
        return {
          target: name,
          'req/s': m.rps,
          'CPU µs/req': round1(m.cpu),
          'user µs': round1(m.user),
          'system µs': round1(m.system),
          'load side busy %': Math.round(m.loadBusy * 100),
          '× http-proxy (keep-alive)': hp ? ratio(m.rps, hp.rps) : '',
          errors: m.errors,
        }
      })
      for (const name of missing) rows.push({ target: name, 'req/s': 'not installed' })
      const igw = med(IGW)
      const bare = med(BARE)
      const http = med(HTTP)
      const socket = med(SOCKET)
      const notes: string[] = []
      if (!pinned) notes.push(`not pinned (${allowed.cpus.length < 2 ? 'fewer than two CPUs allowed' : 'taskset missing or refused'}): every process shared every core, so req/s ratios are not CPU ratios in this run`)
      if (http && socket) notes.push(`node:http's own server cost over a bare socket giving the same reply: ${round1(http.cpu - socket.cpu)} µs/req (${round1(http.cpu)} vs ${round1(socket.cpu)}); a listener of our own could save at most that`)
      if (hp && bare && igw) {
        notes.push(`2× http-proxy's req/s needs at most ${round1(hp.cpu / 2)} µs of proxy CPU per request; the bare node:http + undici relay uses ${round1(bare.cpu)} (${round1(bare.system)} of it in the kernel: two reads and two writevs on loopback), igw ${round1(igw.cpu)}`)
      }
      notes.push(`"load side busy %" is the CPU of the load generator and the backend (CPU ${loadCpu ?? '?'}) during the window: near 100 means that CPU, not the target, set the pace`)
      return {
        scenario: 'floor',
        description: this.description,
        columns: ['target', 'req/s', 'CPU µs/req', 'user µs', 'system µs', 'load side busy %', '× http-proxy (keep-alive)', 'errors'],
        rows,
        targets: hp && igw ? [{ name: 'pinned: empty chain (1 worker) ÷ http-proxy keep-alive, req/s', value: ratio(igw.rps, hp.rps), target: '≥ 2', pass: ratio(igw.rps, hp.rps) >= 2 }] : [],
        notes,
      }
    } finally {
      for (const p of procs.values()) await p.stop()
      await backend.stop()
      if (pinned) pinTree(process.pid, allowed.list)
    }
  },
}
