// passthrough: what the proxy itself costs. Same payload, same connections, one run:
// direct backend, igw (empty chain; 1 and N workers; default chain), node http-proxy, nginx.
import { availableParallelism } from 'node:os'
import type { Scenario } from '../run.ts'
import { cpuTreeSeconds, load, pacedLoad, ratio, rssBytes, sleep, startIgw, startNginx, startPeer, type Proc } from '../lib/harness.ts'

const BODY = JSON.stringify({ query: 'query Entity($id: ID!) { entity(id: $id) { id name email updatedAt } }', variables: { id: '42' }, operationName: 'Entity' })
const DURATION = Number(process.env.BENCH_DURATION ?? 10)
const CONNECTIONS = 50

/** req/s and latency at 50 connections, and the proxy's own CPU (all its threads) per request. */
async function measure(port: number, pid: number | undefined) {
  const opts = { url: `http://127.0.0.1:${port}/graphql`, method: 'POST' as const, body: BODY, headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, connections: CONNECTIONS }
  await load({ ...opts, durationSec: Math.min(2, DURATION) }) // warm-up: JIT, pools
  const c0 = pid === undefined ? 0 : cpuTreeSeconds(pid)
  const r = await load({ ...opts, durationSec: DURATION })
  const cpuUs = pid === undefined || r.total === 0 ? undefined : Math.round(((cpuTreeSeconds(pid) - c0) * 1e6) / r.total * 10) / 10
  return { ...r, cpuUs }
}

export const scenario: Scenario = {
  name: 'passthrough',
  description: `POST GraphQL (${BODY.length} B) → 180 B JSON, ${CONNECTIONS} connections, ${DURATION} s per target, all targets in one run.`,
  async run() {
    const cores = availableParallelism()
    const backend = await startPeer('backend.ts')
    const upstream = `http://127.0.0.1:${backend.port}`
    const igw = (workers: number, filters: unknown[]) =>
      startIgw({ workers, tenants: { acme: {} }, routes: [{ name: 'graphql', upstream, type: 'graphql', filters }] })
    const targets: [string, () => Promise<Proc | undefined>][] = [
      ['direct (no proxy)', async () => undefined],
      ['igw, empty chain, 1 worker', () => igw(1, [])],
      [`igw, empty chain, ${cores} workers`, () => igw(cores, [])],
      ['igw, request-id + tenant, 1 worker', () => igw(1, [{ name: 'request-id' }, { name: 'tenant' }])],
      ['bare node:http + undici relay (no features)', () => startPeer('bare-relay.ts', [upstream])],
      ['node http-proxy (keep-alive agent)', () => startPeer('http-proxy.ts', [upstream])],
      ['node http-proxy (library default)', () => startPeer('http-proxy.ts', [upstream, 'no-keepalive'])],
      [`nginx (${cores} workers, upstream keepalive)`, () => startNginx(backend.port, cores)],
    ]
    const rows: Record<string, string | number>[] = []
    const rps: Record<string, number> = {}
    const cpu: Record<string, number> = {}
    for (const [name, start] of targets) {
      const proc = await start()
      if (proc === undefined && name !== 'direct (no proxy)') {
        rows.push({ target: name, 'req/s': 'not installed' })
        continue
      }
      const r = await measure(proc?.port ?? backend.port, proc?.child.pid)
      await proc?.stop()
      rps[name] = r.rps
      if (r.cpuUs !== undefined) cpu[name] = r.cpuUs
      rows.push({ target: name, 'req/s': r.rps, 'p50 ms': r.p50, 'p99 ms': r.p99, 'proxy CPU µs/req': r.cpuUs ?? '', errors: r.errors + r.non2xx })
    }
    const hp = rps['node http-proxy (keep-alive agent)'] ?? 0
    const hpDefault = rps['node http-proxy (library default)'] ?? 0
    for (const row of rows) {
      const v = rps[row.target as string]
      if (v !== undefined) {
        row['× http-proxy (keep-alive)'] = ratio(v, hp)
        row['× direct'] = ratio(v, rps['direct (no proxy)']!)
      }
    }

    // Added latency at a paced 1k req/s (open loop, evenly spaced, not saturated): p99
    // through igw minus p99 direct; three alternating rounds, medians compared.
    const paced = (port: number) =>
      pacedLoad({ url: `http://127.0.0.1:${port}/graphql`, method: 'POST', body: BODY, headers: { 'content-type': 'application/json' }, rate: 1000, durationSec: DURATION })
    const one = await igw(1, [{ name: 'request-id' }])
    await paced(backend.port)
    await paced(one.port) // warm-up both
    const directP99: number[] = []
    const igwP99: number[] = []
    let pacedDirect = await paced(backend.port)
    let pacedIgw = await paced(one.port)
    for (let round = 0; round < 3; round++) {
      if (round > 0) {
        pacedDirect = await paced(backend.port)
        pacedIgw = await paced(one.port)
      }
      directP99.push(pacedDirect.p99)
      igwP99.push(pacedIgw.p99)
    }
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!

    // A 200 MB streamed response: RSS growth of the igw process.
    const before = rssBytes(one.child.pid!)
    let peak = before
    const res = await fetch(`http://127.0.0.1:${one.port}/stream?mb=200`)
    let bytes = 0
    let n = 0
    for await (const c of res.body!) {
      bytes += (c as Uint8Array).length
      if (++n % 64 === 0) peak = Math.max(peak, rssBytes(one.child.pid!))
    }
    await sleep(100)
    await one.stop()
    await backend.stop()
    const growthMB = Math.round(((peak - before) / 1048576) * 10) / 10
    const addedP99 = Math.round((median(igwP99) - median(directP99)) * 100) / 100
    const emptyRatio = ratio(rps['igw, empty chain, 1 worker']!, hp)
    const cpuRatio = ratio(cpu['node http-proxy (keep-alive agent)'] ?? 0, cpu['igw, empty chain, 1 worker'] ?? 0)
    const floorRatio = ratio(rps['bare node:http + undici relay (no features)'] ?? 0, hp)
    const emptyRatioN = ratio(rps[`igw, empty chain, ${cores} workers`]!, hp)
    return {
      scenario: 'passthrough',
      description: this.description,
      columns: ['target', 'req/s', 'p50 ms', 'p99 ms', 'proxy CPU µs/req', 'errors', '× http-proxy (keep-alive)', '× direct'],
      rows,
      targets: [
        { name: 'empty chain (1 worker) ÷ http-proxy keep-alive, req/s', value: emptyRatio, target: '≥ 2', pass: emptyRatio >= 2 },
        { name: `empty chain (${cores} workers) ÷ http-proxy keep-alive, req/s`, value: emptyRatioN, target: '≥ 2', pass: emptyRatioN >= 2 },
        { name: 'empty chain (1 worker) ÷ http-proxy library default, req/s', value: ratio(rps['igw, empty chain, 1 worker']!, hpDefault), target: '≥ 2', pass: ratio(rps['igw, empty chain, 1 worker']!, hpDefault) >= 2 },
        { name: 'proxy CPU per request: http-proxy keep-alive ÷ igw empty chain (1 worker)', value: cpuRatio, target: '≥ 2', pass: cpuRatio >= 2 },
        { name: 'added p99 at paced 1k req/s (ms)', value: addedP99, target: '≤ 2', pass: addedP99 <= 2 },
        { name: `RSS growth streaming ${Math.round(bytes / 1048576)} MB (MB)`, value: growthMB, target: '≤ 64', pass: growthMB <= 64 },
      ],
      notes: [
        `paced 1k req/s (open loop): direct p99 per round ${directP99.join(' / ')} ms; igw (request-id, 1 worker) p99 per round ${igwP99.join(' / ')} ms; last round p50 ${pacedDirect.p50} vs ${pacedIgw.p50} ms`,
        `the floor: a bare node:http + undici relay (no header hygiene, timeouts, metrics or error handling) reaches ${floorRatio}× http-proxy keep-alive in this run; that is the ceiling for any proxy built on node:http + undici here`,
        '"proxy CPU µs/req" is user + system CPU of the proxy process (all threads) per request during the measured window',
        `autocannon, the backend, and the proxy share the machine's ${cores} cores; ratios matter, absolute numbers do not travel`,
      ],
    }
  },
}
