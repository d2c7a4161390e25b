// cache: the top-5 persisted queries against a backend whose resolvers take 20 ms, keys drawn
// from a Zipf distribution, through igw with the cache off and on (same run, same request
// sequence, paced open loop so latency is measured from the intended send time); then hit
// throughput (one hot key, closed loop) against nginx relaying the very same response bytes.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Scenario } from '../run.ts'
import { load, pacedRun, percentile, ratio, startIgw, startNginx, startPeer, type LoadResult } from '../lib/harness.ts'

const DURATION = Number(process.env.BENCH_DURATION ?? 10)
const RATE = Number(process.env.BENCH_CACHE_RATE ?? 400)
const KEYS_PER_OP = 100
const ZIPF_S = 1.0

const OPERATIONS = {
  product: { document: 'query Product($id: ID!) { product(id: $id) { id name price category } }', variable: 'id' },
  category: { document: 'query Category($name: String!) { category(name: $name) { id name price } }', variable: 'name' },
  reviews: { document: 'query Reviews($productId: ID!) { reviews(productId: $productId) { id stars text } }', variable: 'productId' },
  user: { document: 'query User($id: ID!) { user(id: $id) { id name } }', variable: 'id' },
  search: { document: 'query Search($term: String!) { search(term: $term) { id name price } }', variable: 'term' },
} as const
type OpId = keyof typeof OPERATIONS
const IDS = Object.keys(OPERATIONS) as OpId[]

/** Deterministic PRNG (mulberry32): both runs replay the same request sequence. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** n keys ranked 1..n with P(rank k) ∝ 1/k^s. */
function zipfSampler(n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let k = 1; k <= n; k++) cdf[k - 1] = sum += 1 / k ** s
  for (let i = 0; i < n; i++) cdf[i]! /= sum
  return () => {
    const u = random()
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cdf[mid]! < u) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

function body(op: OpId, key: number): string {
  return JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: op } }, variables: { [OPERATIONS[op].variable]: String(key) } })
}

function requestSequence(total: number, seed = 42): string[] {
  const random = rng(seed)
  const pick = zipfSampler(IDS.length * KEYS_PER_OP, ZIPF_S, random)
  const out: string[] = []
  for (let i = 0; i < total; i++) {
    const rank = pick()
    out.push(body(IDS[rank % IDS.length]!, Math.floor(rank / IDS.length)))
  }
  return out
}

interface PacedResult {
  all: number[]
  byCache: Map<string, number[]>
  /** Latency from the moment the request was actually issued (the client's own timer lateness excluded). */
  sentByCache: Map<string, number[]>
  errors: number
}

/** The sequence, paced (open loop), with each answer's x-cache verdict. */
async function paced(port: number, bodies: string[], rate: number): Promise<PacedResult> {
  const run = await pacedRun({
    url: `http://127.0.0.1:${port}/graphql`,
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' },
    body: bodies,
    total: bodies.length,
    rate,
    classify: (h) => String(h['x-cache'] ?? 'none'),
    isError: (status) => status !== 200,
  })
  const byCache = new Map<string, number[]>()
  const sentByCache = new Map<string, number[]>()
  for (let i = 0; i < bodies.length; i++) {
    const k = run.classes[i] ?? 'error'
    for (const [map, arr] of [[byCache, run.fromIntended], [sentByCache, run.fromSent]] as const) {
      let list = map.get(k)
      if (list === undefined) map.set(k, (list = []))
      list.push(arr[i]!)
    }
  }
  return { all: Array.from(run.fromIntended), byCache, sentByCache, errors: run.errors }
}

export const scenario: Scenario = {
  name: 'cache',
  description: `Top-5 persisted queries (APQ hash + variables), ${KEYS_PER_OP} keys each, Zipf s=${ZIPF_S} over all ${IDS.length * KEYS_PER_OP} keys; backend resolvers take 20 ms (graphql-yoga). Paced ${RATE} req/s for ${DURATION * 2} s, cache off then on, same request sequence; hit throughput vs nginx relaying the same bytes.`,
  async run() {
    const cores = availableParallelism()
    const backend = await startPeer('slow-graphql.ts')
    const upstream = `http://127.0.0.1:${backend.port}`
    const operations = Object.fromEntries(IDS.map((id) => [id, { document: OPERATIONS[id].document }]))
    const igw = (cache: boolean) =>
      startIgw({
        workers: cores,
        tenants: { acme: {} },
        persistedDocuments: { operations },
        routes: [{ name: 'graphql', upstream, type: 'graphql', filters: [{ name: 'request-id' }, { name: 'tenant' }, { name: 'persisted' }, ...(cache ? [{ name: 'cache', ttlSeconds: 30, refreshAheadSeconds: 10 }] : [])] }],
      })
    const bodies = requestSequence(RATE * DURATION * 2)
    // The second window: same distribution, other draws, right after the first. Entries the
    // first window stored expire (TTL 30 s) during it, so it is the steady state a long-running
    // proxy sees with the Helm default TTL: expiry misses, no cold start, nothing stale served.
    const steady = requestSequence(RATE * DURATION * 2, 43)
    const rows: Record<string, string | number>[] = []

    const off = await igw(false)
    await paced(off.port, bodies.slice(0, 200), 100) // warm-up: JIT, pools (not measured)
    const rOff = await paced(off.port, bodies, RATE)
    const rOff2 = await paced(off.port, steady, RATE)
    await off.stop()
    rows.push({ target: 'igw, cache off', requests: bodies.length, 'p50 ms': percentile(rOff.all, 0.5), 'p95 ms': percentile(rOff.all, 0.95), 'p99 ms': percentile(rOff.all, 0.99), 'hit ratio': '-', errors: rOff.errors })

    const on = await igw(true)
    await paced(on.port, requestSequence(200).map((b) => b.replace(/"(\d+)"\}\}$/, '"w$1"}}')), 100) // warm-up on keys the run never uses
    const rOn = await paced(on.port, bodies, RATE)
    const rOn2 = await paced(on.port, steady, RATE)
    const hits2 = rOn2.byCache.get('HIT') ?? []
    const misses2 = rOn2.byCache.get('MISS') ?? []
    const hitRatio2 = Math.round((hits2.length / steady.length) * 1000) / 1000
    const hits = rOn.byCache.get('HIT') ?? []
    const misses = rOn.byCache.get('MISS') ?? []
    const hitRatio = Math.round((hits.length / bodies.length) * 1000) / 1000
    rows.push({ target: 'igw, cache on (all requests)', requests: bodies.length, 'p50 ms': percentile(rOn.all, 0.5), 'p95 ms': percentile(rOn.all, 0.95), 'p99 ms': percentile(rOn.all, 0.99), 'hit ratio': hitRatio, errors: rOn.errors })
    rows.push({ target: 'igw, cache on: hits', requests: hits.length, 'p50 ms': percentile(hits, 0.5), 'p95 ms': percentile(hits, 0.95), 'p99 ms': percentile(hits, 0.99), 'hit ratio': '', errors: '' })
    const hitsSent = rOn.sentByCache.get('HIT') ?? []
    rows.push({ target: 'igw, cache on: hits, from actual send', requests: hitsSent.length, 'p50 ms': percentile(hitsSent, 0.5), 'p95 ms': percentile(hitsSent, 0.95), 'p99 ms': percentile(hitsSent, 0.99), 'hit ratio': '', errors: '' })
    rows.push({ target: 'igw, cache on: misses', requests: misses.length, 'p50 ms': percentile(misses, 0.5), 'p95 ms': percentile(misses, 0.95), 'p99 ms': percentile(misses, 0.99), 'hit ratio': '', errors: '' })
    rows.push({ target: 'steady state (next window, entries expiring): igw, cache off', requests: steady.length, 'p50 ms': percentile(rOff2.all, 0.5), 'p95 ms': percentile(rOff2.all, 0.95), 'p99 ms': percentile(rOff2.all, 0.99), 'hit ratio': '-', errors: rOff2.errors })
    rows.push({ target: 'steady state: igw, cache on', requests: steady.length, 'p50 ms': percentile(rOn2.all, 0.5), 'p95 ms': percentile(rOn2.all, 0.95), 'p99 ms': percentile(rOn2.all, 0.99), 'hit ratio': hitRatio2, errors: rOn2.errors })

    // Hit throughput: one hot key, closed loop, against nginx relaying the same response.
    const hot = body('product', 1)
    const probe = await fetch(`http://127.0.0.1:${on.port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: hot })
    const cached = Buffer.from(await probe.arrayBuffer())
    const contentType = probe.headers.get('content-type') ?? 'application/json'
    const dir = mkdtempSync(join(tmpdir(), 'igw-bench-cache-'))
    writeFileSync(join(dir, 'body.json'), cached)
    const opts = { method: 'POST' as const, body: hot, headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, connections: 50 }
    const throughput: [string, LoadResult | undefined][] = []
    await load({ ...opts, url: `http://127.0.0.1:${on.port}/graphql`, durationSec: Math.min(2, DURATION) })
    throughput.push([`igw cache hits (${cores} workers)`, await load({ ...opts, url: `http://127.0.0.1:${on.port}/graphql`, durationSec: DURATION })])
    await on.stop()
    await backend.stop()
    const fixed = await startPeer('fixed-response.ts', [join(dir, 'body.json'), contentType])
    const nginx = await startNginx(fixed.port, cores)
    if (nginx !== undefined) {
      await load({ ...opts, url: `http://127.0.0.1:${nginx.port}/graphql`, durationSec: Math.min(2, DURATION) })
      throughput.push([`nginx relaying the same ${cached.length} B (${cores} workers, upstream keepalive)`, await load({ ...opts, url: `http://127.0.0.1:${nginx.port}/graphql`, durationSec: DURATION })])
      await nginx.stop()
    } else {
      throughput.push(['nginx (not installed)', undefined])
    }
    await fixed.stop()
    for (const [target, r] of throughput) {
      rows.push(r ? { target, requests: r.total, 'req/s': r.rps, 'p50 ms': r.p50, 'p99 ms': r.p99, errors: r.errors + r.non2xx } : { target, 'req/s': 'not installed' })
    }

    const hitP95 = percentile(hitsSent, 0.95)
    const igwRps = throughput[0]![1]!.rps
    const nginxRps = throughput[1]![1]?.rps ?? 0
    const p95Off = percentile(rOff.all, 0.95)
    const p95On = percentile(rOn.all, 0.95)
    const reduction = Math.round((1 - p95On / p95Off) * 1000) / 10
    const reduction2 = Math.round((1 - percentile(rOn2.all, 0.95) / percentile(rOff2.all, 0.95)) * 1000) / 10
    return {
      scenario: 'cache',
      description: this.description,
      columns: ['target', 'requests', 'req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'hit ratio', 'errors'],
      rows,
      targets: [
        { name: 'hit p95, from actual send (ms)', value: hitP95, target: '≤ 2', pass: hitP95 <= 2 },
        { name: 'hit ratio', value: hitRatio, target: '≥ 0.85', pass: hitRatio >= 0.85 },
        { name: 'hit throughput ÷ nginx relaying the same response', value: ratio(igwRps, nginxRps), target: '≥ 1', pass: nginxRps > 0 && igwRps >= nginxRps },
        { name: 'read p95 reduction, cache on vs off, steady state (%)', value: reduction2, target: '≥ 10', pass: reduction2 >= 10 },
      ],
      notes: [
        `cache config: the Helm defaults (ttlSeconds 30, write-through) plus refreshAheadSeconds 10 (a hit in an entry's last 10 s renews it in the background; nothing older than the TTL is served, no stale-while-revalidate)`,
        `first window, cold start included: every key's first request is a miss; ${misses.length} misses of ${bodies.length} (${Math.round((misses.length / bodies.length) * 1000) / 10} %); read p95 reduction there ${reduction} % (p95 sits on the edge of the miss tail once misses approach 5 % of requests)`,
        `steady state: the next ${DURATION * 2} s, other draws from the same distribution; entries of the first window reach the end of their TTL in it: hot ones are renewed ahead, cold ones expire and miss again; ${misses2.length} misses of ${steady.length}, hit ratio ${hitRatio2}`,
        `latency is from the intended send time (open loop, no coordinated omission) except the "from actual send" row, which drops the load generator's own timer lateness (it shares the cores); hits are classified by the x-cache header; hit p95 from the intended time: ${percentile(hits, 0.95)} ms`,
        `autocannon, the backend, igw and nginx share the machine's ${cores} cores; ratios matter, absolute numbers do not travel`,
      ],
    }
  },
}
