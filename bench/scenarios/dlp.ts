// dlp: a ~200 MB NDJSON export through igw (1 worker) with no DLP, mask_basic and
// tokenize_strict, in one run: wall-clock MB/s, MB per CPU-second of the igw process (the
// per-core figure) and RSS growth while streaming. The direct backend is the ceiling.
import { readFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import type { Scenario } from '../run.ts'
import { rssBytes, sleep, startIgw, startPeer, type Proc } from '../lib/harness.ts'

const MB = 1024 * 1024
const SIZE_MB = Number(process.env.BENCH_DLP_MB ?? 200)
const ROUNDS = Number(process.env.BENCH_DLP_ROUNDS ?? 3)

/** utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15, clock ticks). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

async function download(port: number, pid: number | undefined): Promise<{ mbps: number; mbPerCpuSec: number; growthMB: number; bytes: number }> {
  const before = pid ? rssBytes(pid) : 0
  let peak = before
  const cpu0 = pid ? cpuSeconds(pid) : 0
  const t0 = performance.now()
  // undici.request (Node streams): the client shares the two cores with igw, and fetch's web
  // streams cost it about twice the CPU.
  const res = await request(`http://127.0.0.1:${port}/export.ndjson?mb=${SIZE_MB}`)
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${await res.body.text()}`)
  let bytes = 0
  let n = 0
  for await (const c of res.body) {
    bytes += (c as Buffer).length
    if (pid && ++n % 64 === 0) peak = Math.max(peak, rssBytes(pid))
  }
  const secs = (performance.now() - t0) / 1000
  const cpu = pid ? cpuSeconds(pid) - cpu0 : secs
  const input = SIZE_MB * MB
  return { mbps: input / MB / secs, mbPerCpuSec: input / MB / cpu, growthMB: (peak - before) / MB, bytes }
}

const round1 = (x: number) => Math.round(x * 10) / 10
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!

export const scenario: Scenario = {
  name: 'dlp',
  description: `NDJSON export of ${SIZE_MB} MiB (~${Math.round((SIZE_MB * MB) / 172 / 1000)}k records: unique e-mails, E.164 phones, order notes) through igw with 1 worker: no DLP vs mask_basic vs tokenize_strict, ${ROUNDS} rounds each after a warm-up, one run.`,
  async run() {
    const backend = await startPeer('export-backend.ts')
    const upstream = `http://127.0.0.1:${backend.port}`
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-bench-dlp-')), 'keyring.json')
    const dlp = { keyring: { file: keyring }, policy: { allowedPresets: ['tokenize_strict', 'mask_basic'] } }
    const igw = (filters: unknown[]) => startIgw({ workers: 1, dlp, routes: [{ name: 'export', upstream, type: 'http', timeouts: { totalMs: 0 }, filters }] })
    const dlpFilter = (preset: string) => [{ name: 'dlp', preset, exports: { paths: [{ prefix: '/export' }] } }]
    const targets: [string, () => Promise<Proc | undefined>][] = [
      ['direct (no proxy)', async () => undefined],
      ['igw, no DLP', () => igw([])],
      ['igw, dlp mask_basic', () => igw(dlpFilter('mask_basic'))],
      ['igw, dlp tokenize_strict', () => igw(dlpFilter('tokenize_strict'))],
    ]
    const rows: Record<string, string | number>[] = []
    const perCore: Record<string, number> = {}
    const growth: Record<string, number> = {}
    for (const [name, start] of targets) {
      const proc = await start()
      await download(proc?.port ?? backend.port, proc?.child.pid) // warm-up (JIT, keyring, caches)
      let best: Awaited<ReturnType<typeof download>> | undefined
      let maxGrowth = 0
      const perCpu: number[] = []
      for (let r = 0; r < ROUNDS; r++) {
        const m = await download(proc?.port ?? backend.port, proc?.child.pid)
        maxGrowth = Math.max(maxGrowth, m.growthMB)
        perCpu.push(m.mbPerCpuSec)
        if (best === undefined || m.mbps > best.mbps) best = m
      }
      await sleep(100)
      const rssMB = proc ? rssBytes(proc.child.pid!) / MB : Number.NaN
      await proc?.stop()
      perCore[name] = median(perCpu)
      growth[name] = maxGrowth
      rows.push({
        target: name,
        'MB/s (wall, best)': round1(best!.mbps),
        'MB per igw CPU-s (median)': proc ? round1(median(perCpu)) : '',
        'MB per igw CPU-s (all rounds)': proc ? perCpu.map(round1).join(' / ') : '',
        'RSS growth MB': proc ? round1(maxGrowth) : '',
        'RSS after MB': proc ? round1(rssMB) : '',
        'out/in bytes': round1(best!.bytes / (SIZE_MB * MB)),
      })
    }
    await backend.stop()
    const mask = perCore['igw, dlp mask_basic']!
    const tok = perCore['igw, dlp tokenize_strict']!
    return {
      scenario: 'dlp',
      description: this.description,
      columns: ['target', 'MB/s (wall, best)', 'MB per igw CPU-s (median)', 'MB per igw CPU-s (all rounds)', 'RSS growth MB', 'RSS after MB', 'out/in bytes'],
      rows,
      targets: [
        { name: 'mask_basic, MB per CPU-second of igw (per core, median of rounds)', value: round1(mask), target: '≥ 50', pass: mask >= 50 },
        { name: 'tokenize_strict, MB per CPU-second of igw (per core, median of rounds)', value: round1(tok), target: '≥ 50', pass: tok >= 50 },
        { name: 'RSS growth while streaming, worst DLP target (MB)', value: round1(Math.max(growth['igw, dlp mask_basic']!, growth['igw, dlp tokenize_strict']!)), target: '≤ 64 (flat)', pass: Math.max(growth['igw, dlp mask_basic']!, growth['igw, dlp tokenize_strict']!) <= 64 },
      ],
      notes: [
        'MB are MiB of input; "MB per igw CPU-s" divides them by the user+system CPU seconds the whole igw process (main thread, worker, GC threads) spent during the download (/proc/<pid>/stat), i.e. throughput per core; the target is checked on the median round',
        'client, backend and igw share the two cores (and other engineers\' jobs when the machine is shared): the wall-clock column moves with that load, and so does CPU time per byte, less so (a busy neighbour on the other vCPU slows this one measurably); the backend patches digits into a pre-rendered block and the client reads with undici.request, so that they take little CPU from igw',
        '"RSS growth" is peak minus start of each measured round (after a warm-up download); "RSS after" is the whole process at the end (`test/filters/dlp/streaming-large.test.ts` bounds growth over a 256 MB export)',
        'tokens are AES-SIV (RFC 5297), a chunk\'s tokens encrypted together with OpenSSL AES-ECB per CMAC round and for CTR (docs/decisions/0008); every e-mail is unique (tokens are not memoized anyway); phones repeat (9000 numbers), so their libphonenumber verdicts are memoized as in a real export',
      ],
    }
  },
}
