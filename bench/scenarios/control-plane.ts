// control-plane: how fast a config change reaches connected proxies. `igw control-plane` (the
// public CLI, SQLite) with N simulated proxies in this process: each holds the real SSE stream,
// verifies the ed25519 signature of every snapshot and POSTs its ACK, as `igw proxy` does.
// Per change: time from the write's response to the last proxy receiving it, and to the last ACK
// being sent. Target: a change reaches 100 proxies within 1 s p99.
import { createPublicKey, verify, type KeyObject } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { Agent, request } from 'undici'
import { stringify } from 'yaml'
import type { Scenario } from '../run.ts'
import { ROOT, sleep, spawnReady } from '../lib/harness.ts'

const PROXIES = Number(process.env.BENCH_CP_PROXIES ?? 100)
const CHANGES = Number(process.env.BENCH_CP_CHANGES ?? 50)
const SECRET = 'bench-secret-0123456789abcdef0123456789'

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : 0
}
const round = (n: number) => Math.round(n * 10) / 10

interface SimProxy {
  received: Map<number, number>
  acked: Map<number, number>
  close(): void
}

async function simulatedProxy(url: string, id: string, token: string, key: KeyObject, agent: Agent): Promise<SimProxy> {
  const received = new Map<number, number>()
  const acked = new Map<number, number>()
  const ac = new AbortController()
  const res = await request(`${url}/v1/stream?proxy=${id}&version=0`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal, dispatcher: agent, bodyTimeout: 0 })
  if (res.statusCode !== 200) throw new Error(`stream ${res.statusCode}`)
  let buf = ''
  res.body.on('data', (chunk: Buffer) => {
    buf += chunk.toString()
    let i
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, i)
      buf = buf.slice(i + 2)
      if (!block.includes('event: snapshot')) continue
      const now = performance.now()
      const data = block.slice(block.indexOf('data: ') + 6)
      const env = JSON.parse(data) as { payload: string; signature: string }
      if (!verify(null, Buffer.from(env.payload), key, Buffer.from(env.signature, 'base64'))) throw new Error('bad signature')
      const version = (JSON.parse(env.payload) as { version: number }).version
      received.set(version, now)
      void request(`${url}/v1/proxies/${id}/ack`, { method: 'POST', dispatcher: agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ version, status: 'ACK' }) })
        .then((r) => r.body.dump())
        .then(() => acked.set(version, performance.now()))
    }
  })
  res.body.on('error', () => undefined)
  return { received, acked, close: () => ac.abort() }
}

export const scenario: Scenario = {
  name: 'control-plane',
  description: `${CHANGES} config changes (PUT /v1/tenants/{id}, SQLite) pushed over SSE to ${PROXIES} connected proxies that verify each ed25519 signature and ACK it.`,
  async run() {
    const dir = mkdtempSync(join(tmpdir(), 'igw-bench-cp-'))
    const seed = join(dir, 'seed.yaml')
    writeFileSync(seed, stringify({ routes: [{ name: 'graphql', upstream: 'http://127.0.0.1:9' }], tenants: { acme: {} } }))
    const cp = await spawnReady(
      process.execPath,
      [join(ROOT, 'bin/igw.js'), 'control-plane', '--db', `sqlite:${join(dir, 'igw.db')}`, '--listen', '127.0.0.1:0', '--auth-secret', SECRET, '--config', seed],
      (line) => {
        try {
          const j = JSON.parse(line) as { msg?: string; listen?: string }
          if (j.msg === 'igw control plane listening') return { port: Number(j.listen!.split(':').pop()) }
        } catch {}
        return undefined
      },
    )
    const url = `http://127.0.0.1:${cp.port}`
    const mint = (sub: string, roles: string[]) => new SignJWT({ roles }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(SECRET))
    const admin = await mint('bench-admin', ['admin'])
    const proxyToken = await mint('bench-proxy', ['proxy'])
    const keyRes = await request(`${url}/v1/signing-key`)
    const key = createPublicKey(((await keyRes.body.json()) as { publicKeyPem: string }).publicKeyPem)
    const agent = new Agent({ connections: PROXIES * 2 + 10 })
    const sims: SimProxy[] = []
    try {
      for (let i = 0; i < PROXIES; i++) sims.push(await simulatedProxy(url, `sim-${i}`, proxyToken, key, agent))
      await sleep(500) // the initial snapshot and its ACKs settle
      const reachAll: number[] = []
      const ackAll: number[] = []
      const perProxy: number[] = []
      const commitMs: number[] = []
      for (let c = 0; c < CHANGES; c++) {
        const t0 = performance.now()
        const res = await request(`${url}/v1/tenants/t${c}`, { method: 'PUT', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ tier: 'bronze' }) })
        const { version } = (await res.body.json()) as { version: number }
        const committed = performance.now()
        commitMs.push(committed - t0)
        const deadline = committed + 10_000
        while (sims.some((s) => !s.acked.has(version)) && performance.now() < deadline) await sleep(2)
        const got = sims.map((s) => s.received.get(version))
        if (got.some((g) => g === undefined)) throw new Error(`version ${version} did not reach every proxy within 10 s`)
        // Measured from the start of the write: what an operator waits for after pressing enter.
        for (const g of got) perProxy.push(g! - t0)
        reachAll.push(Math.max(...(got as number[])) - t0)
        ackAll.push(Math.max(...sims.map((s) => s.acked.get(version)!)) - t0)
        await sleep(20)
      }
      for (const a of [reachAll, ackAll, perProxy, commitMs]) a.sort((x, y) => x - y)
      const row = (name: string, a: number[]) => ({ measure: name, p50: round(pct(a, 50)), p90: round(pct(a, 90)), p99: round(pct(a, 99)), max: round(a.at(-1) ?? 0) })
      const p99 = round(pct(reachAll, 99))
      return {
        scenario: 'control-plane',
        description: this.description,
        columns: ['measure', 'p50', 'p90', 'p99', 'max'],
        rows: [
          row('write committed (PUT → 200: validate, sign, audit, SQLite commit), ms', commitMs),
          row(`change reaches all ${PROXIES} proxies (from the PUT), ms`, reachAll),
          row(`all ${PROXIES} ACKs sent and answered (from the PUT), ms`, ackAll),
          row('one proxy receives a change (from the PUT), ms', perProxy),
        ],
        notes: [
          `${PROXIES} simulated proxies in the bench process (real SSE streams over loopback, real signature checks, real ACK POSTs), one \`igw control-plane\` process.`,
          'Applying a snapshot inside a real proxy (building filter chains in every worker) adds its own time: the push test measures one real `igw proxy` (2 workers) at a few hundred ms to ACK.',
        ],
        targets: [{ name: `change reaches ${PROXIES} proxies, p99 (ms)`, value: p99, target: '≤ 1000', pass: p99 <= 1000 }],
      }
    } finally {
      for (const s of sims) s.close()
      await agent.close().catch(() => undefined)
      await cp.stop()
    }
  },
}
