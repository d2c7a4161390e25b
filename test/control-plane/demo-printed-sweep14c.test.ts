// `igw demo` prints copy-paste commands; a new user's first hour is running them. This test runs
// them the way that user does: it reads the demo's printed text, runs every `curl`, `for` loop,
// `export` and `npx igw …` line with bash and the real curl, plays the WebSocket lines, and checks
// each result against what the line's comment (or the README) says. A printed command with no
// expectation here fails the test, so the printed instructions cannot rot unnoticed.
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { printableHost } from '../../proxy/demo.ts'
import { IGW_BIN, ROOT, spawnIgw } from '../helpers/proxy.ts'

const run = promisify(execFile)

interface Ran {
  stdout: string
  stderr: string
  code: number
}

async function sh(line: string, env: NodeJS.ProcessEnv): Promise<Ran> {
  try {
    const { stdout, stderr } = await run('bash', ['-c', line], { cwd: ROOT, env: { ...process.env, npm_config_yes: 'true', npm_config_update_notifier: 'false', ...env }, timeout: 90_000, maxBuffer: 16 << 20 })
    return { stdout, stderr, code: 0 }
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number }
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : -1 }
  }
}

const json = (r: Ran): Record<string, unknown> => {
  try {
    return JSON.parse(r.stdout) as Record<string, unknown>
  } catch {
    throw new Error(`not JSON (exit ${r.code}): ${r.stdout.slice(0, 500)} ${r.stderr.slice(0, 500)}`)
  }
}

/** Plays the printed websocat session: the subprotocol from `--protocol`, one line, wait for an answer, the next. */
async function playWebsocket(url: string, protocol: string, lines: string[]): Promise<unknown[]> {
  const ws = new WebSocket(url, [protocol])
  const got: unknown[] = []
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`websocket: no complete within 30 s: ${JSON.stringify(got)}`)), 30_000)
    ws.on('message', (d: Buffer) => {
      const m = JSON.parse(d.toString()) as { type: string }
      got.push(m)
      if (m.type === 'connection_ack' && lines.length) ws.send(lines.shift()!)
      if (m.type === 'complete' || m.type === 'error') {
        clearTimeout(timer)
        resolve()
      }
    })
    ws.on('close', (code: number, reason: Buffer) => {
      clearTimeout(timer)
      if (got.some((m) => (m as { type: string }).type === 'complete')) resolve()
      else reject(new Error(`websocket closed ${code} ${reason.toString()}: ${JSON.stringify(got)}`))
    })
    ws.on('error', reject)
  })
  await once(ws, 'open')
  expect(ws.protocol).toBe(protocol)
  ws.send(lines.shift()!)
  try {
    await done
  } finally {
    ws.terminate()
  }
  return got
}

describe('igw demo: every printed command does what its text says', () => {
  it('runs the printed curl, loop, control plane, audit and websocket lines as a user would', { timeout: 240_000 }, async () => {
    const demo = await spawnIgw(['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0' })
    try {
      await expect.poll(() => demo.output.join(''), { timeout: 30_000, interval: 100 }).toContain('Ctrl-C stops everything')
      const text = demo.output.join('')
      const lines = text.split('\n')
      const commands = lines.filter((l) => /^ {2}(curl|for|export|npx|igw) /.test(l)).map((l) => l.slice(2))
      expect(commands.length).toBeGreaterThan(15)
      const env: NodeJS.ProcessEnv = {}
      const cacheLine = commands.find((c) => c.includes('# MISS, then HIT'))!
      expect(cacheLine).toBeDefined()
      const seen = new Set<string>()
      const gateway = /gateway \(sidecar\)\s+(\S+)\/graphql/.exec(text)![1]!
      const adminUrl = /admin\s+(\S+)\/metrics/.exec(text)![1]!
      const configVersion = async () => ((await (await fetch(`${adminUrl}/config`)).json()) as { version: number }).version
      // connection: close, as curl's: no idle keep-alive for the Ctrl-C below to wait the drain's grace (1 s) on.
      const acmePolicy = async () => (await fetch(`${gateway}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme', connection: 'close' }, body: '{"query":"{ __typename }"}' })).headers.get('ratelimit-policy')

      // What each printed line must give; keyed by a piece of the line. Checked in printed order.
      const expectations: { key: RegExp; check: (r: Ran, line: string) => Promise<void> | void }[] = [
        { key: /hello\(name: \\"igw\\"\)/, check: (r) => expect(json(r)).toEqual({ data: { hello: 'Hello, igw!' } }) },
        {
          key: /# MISS, then HIT/,
          check: async (r, line) => {
            expect(r.stdout).toMatch(/^x-cache: MISS$/im)
            expect(r.stdout).toMatch(/^ratelimit-policy: "rate";q=30;/im)
            expect(r.stdout).toMatch(/^ratelimit: /im)
            expect((await sh(line, env)).stdout).toMatch(/^x-cache: HIT$/im) // the same line again
          },
        },
        {
          key: /# write-through/,
          check: async (r) => {
            expect(json(r)).toMatchObject({ data: { updateEntity: { id: '1', name: 'Renamed' } } })
            const again = await sh(cacheLine, env) // the cached list held entity 1: dropped
            expect(again.stdout).toMatch(/^x-cache: MISS$/im)
          },
        },
        {
          key: /# persisted id, cost 5/,
          check: (r) => expect((json(r) as { data: { entities: unknown[] } }).data.entities).toHaveLength(5),
        },
        {
          key: /# acme: burst 30, then 429/,
          check: (r) => {
            const codes = r.stdout.trim().split(/\s+/)
            expect(codes).toHaveLength(40)
            expect(codes[0]).toBe('200')
            expect(codes).toContain('429')
            expect(codes.indexOf('429')).toBeLessThanOrEqual(30)
            expect(codes.every((c) => c === '200' || c === '429')).toBe(true)
          },
        },
        { key: /# unknown tenant -> demo default/, check: (r) => expect(json(r)).toEqual({ data: { hello: 'Hello, world!' } }) },
        { key: /# malformed -> 400 BAD_REQUEST/, check: (r) => expect(json(r)).toMatchObject({ errors: [{ extensions: { code: 'BAD_REQUEST' } }] }) },
        {
          key: /entities\.ndjson.*# DLP/,
          check: (r) => {
            const recs = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { email: string; phone: string; ssn: string })
            expect(recs).toHaveLength(3)
            for (const rec of recs) {
              expect(rec.email).toMatch(/^u\*+@example\.com$/)
              expect(rec.phone).toMatch(/^\+1\*+\d{4}$/)
              expect(rec.ssn).toMatch(/^tok_ssn_us_/)
            }
          },
        },
        { key: /entities\.csv.*403 DLP_BLOCKED/, check: (r) => expect(json(r)).toMatchObject({ errors: [{ extensions: { code: 'DLP_BLOCKED', type: 'ssn_us' } }] }) },
        {
          key: /\/metrics \| grep/,
          check: (r) => {
            for (const m of ['igw_requests_total{', 'igw_cache_requests_total{result="hit"}', 'igw_quota_rejections_total{', 'igw_dlp_actions_total{']) expect(r.stdout).toContain(m)
          },
        },
        { key: /^export IGW_TOKEN=/, check: () => undefined },
        {
          key: /\/v1\/tenants -H/,
          check: (r) => expect((json(r) as { items: { id: string }[] }).items.map((t) => t.id).sort()).toEqual(['acme', 'demo']),
        },
        { key: /\/v1\/tenants\/initech .*bronze/, check: (r) => expect(json(r)).toMatchObject({ id: 'initech', config: { tier: 'bronze' } }) },
        {
          key: /\/v1\/tenants\/acme\/quotas\/graphql/,
          check: async (r, line) => {
            const limit = (JSON.parse(/-d '([^']*)'/.exec(line)![1]!) as { limitPerDay: number }).limitPerDay
            expect(json(r)).toMatchObject({ tenant: 'acme', kind: 'graphql', limitPerDay: limit })
            // a change a user can see: the gateway's acme policy takes the new daily limit
            await expect.poll(acmePolicy, { timeout: 30_000, interval: 200 }).toContain(`"daily";q=${limit};`)
            expect(line).toContain(`"daily";q=${limit}`)
          },
        },
        {
          key: /platinum.*# 400 names the path/,
          check: (r) => expect(json(r)).toMatchObject({ status: 400, problems: [expect.stringContaining('tenants.acme.tier')] }),
        },
        {
          key: /\/v1\/proxies .*# applied version/,
          check: async (r) => {
            const body = json(r) as { headVersion: number; items: { id: string; appliedVersion: number; lastNack: unknown }[] }
            expect(body.items).toEqual([expect.objectContaining({ id: 'demo-proxy', appliedVersion: body.headVersion, lastNack: null })])
            expect(body.headVersion).toBe(3) // seed, initech, the quota change
            expect(await configVersion()).toBe(3)
          },
        },
        {
          key: /\/v1\/audit .*# signed, hash-chained/,
          check: (r) => expect((json(r) as { items: { seq: number; action: string }[] }).items.map((i) => i.seq)).toEqual([1, 2, 3]),
        },
        { key: /\/statement"/, check: (r) => expect(json(r)).toMatchObject({ tenant: 'demo', days: expect.any(Array), signature: expect.any(String) }) },
        { key: /quotas\(tenant: \\"acme\\"\)/, check: (r) => expect(json(r)).toMatchObject({ data: { quotas: [{ kind: 'graphql', limitPerDay: expect.any(Number) }] } }) },
        { key: /# FORBIDDEN: viewer/, check: (r) => expect(json(r)).toMatchObject({ errors: [{ extensions: { code: 'FORBIDDEN' } }] }) },
        {
          key: /audit verify/,
          check: (r) => {
            expect(r.code, r.stderr).toBe(0)
            // the three writes, and the viewer's refused setQuota (refused writes are audited)
            expect(r.stdout).toMatch(/^audit log OK: 4 entries/m)
          },
        },
      ]

      for (const line of commands) {
        const matching = expectations.filter((e) => e.key.test(line))
        expect(matching, `printed command with ${matching.length} expectations: ${line}`).toHaveLength(1)
        const exp = matching[0]!
        seen.add(exp.key.source)
        if (line.startsWith('export ')) {
          const m = /^export (\w+)=(\S+)$/.exec(line)!
          env[m[1]!] = m[2]!
          continue
        }
        const r = await sh(line, env)
        try {
          await exp.check(r, line)
        } catch (err) {
          throw new Error(`printed command: ${line}\nexit ${r.code}\nstdout: ${r.stdout.slice(0, 1000)}\nstderr: ${r.stderr.slice(0, 1000)}\n${(err as Error).message}`)
        }
      }
      expect([...seen].sort()).toEqual(expectations.map((e) => e.key.source).sort()) // nothing expected went unprinted

      // The WebSocket lines: a websocat command line (its -H takes several values, so a URL after
      // `-H 'x: y'` is read as a header: the subprotocol must be given with --protocol), then what to type.
      const at = lines.findIndex((l) => /^ {2}websocat /.test(l))
      expect(at).toBeGreaterThan(0)
      const ws = /^ {2}websocat --protocol (\S+) (ws:\/\/\S+)$/.exec(lines[at]!)
      expect(ws, lines[at]).not.toBeNull()
      const typed = [lines[at + 1]!.trim(), lines[at + 2]!.trim()]
      const got = await playWebsocket(ws![2]!, ws![1]!, typed)
      expect(got).toEqual([
        { type: 'connection_ack' },
        ...[5, 4, 3, 2, 1].map((n) => ({ id: '1', type: 'next', payload: { data: { countdown: n } } })),
        { id: '1', type: 'complete' },
      ])
    } finally {
      expect(await demo.stop('SIGINT')).toBe(0) // "Ctrl-C stops everything"
    }
  })

  it('names the address a client can reach when --listen names a host', () => {
    expect(printableHost(':8080')).toBe('127.0.0.1')
    expect(printableHost('0.0.0.0:8080')).toBe('127.0.0.1')
    expect(printableHost('[::]:8080')).toBe('127.0.0.1')
    expect(printableHost('127.0.0.2:8080')).toBe('127.0.0.2')
    expect(printableHost('[::1]:8080')).toBe('[::1]')
    expect(printableHost('localhost:8080')).toBe('localhost')
  })

  it('a taken backend port is one line and EX_UNAVAILABLE, no stack trace', async () => {
    const holder = createServer()
    holder.listen(0, '127.0.0.1')
    await once(holder, 'listening')
    const port = (holder.address() as { port: number }).port
    try {
      const child = spawn(process.execPath, [IGW_BIN, 'demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { env: { ...process.env, IGW_DEMO_BACKEND: `127.0.0.1:${port}`, IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0' }, stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.stderr.on('data', (d: Buffer) => (out += d.toString()))
      const [code] = (await once(child, 'exit')) as [number]
      expect(out.trim()).toBe(`igw demo: port ${port} is taken; run the sample backend elsewhere with IGW_DEMO_BACKEND=127.0.0.1:4001`)
      expect(code).toBe(69)
    } finally {
      holder.close()
    }
  })
})

describe('config/examples: the commands in their comments run beside `igw demo`', () => {
  // Each example's comment says to start it next to a running `npx igw demo`, whose backend,
  // control plane, gateway and admin hold :4000, :7070, :8080 and :9901.
  const demoPorts = new Set([4000, 7070, 8080, 9901])
  const dir = join(ROOT, 'config/examples')
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml'))) {
    const text = readFileSync(join(dir, file), 'utf8')
    const starts = text.split('\n').filter((l) => /^#\s+npx igw proxy --config /.test(l))
    if (!starts.length || !/igw demo/.test(text)) continue
    it(`${file}: its proxy command takes no port the demo holds`, () => {
      for (const cmd of starts) {
        const listen = /--listen (\S+)/.exec(cmd)?.[1] ?? ':8080'
        const admin = /--admin-listen (\S+)/.exec(cmd)?.[1] ?? ':9901'
        for (const addr of [listen, admin]) expect(demoPorts.has(Number(addr.slice(addr.lastIndexOf(':') + 1))), `${file}: ${cmd.trim()}`).toBe(false)
        // the URLs it tells the user to open are that proxy's
        const port = listen.slice(listen.lastIndexOf(':') + 1)
        for (const url of text.match(/(?:ws|http):\/\/127\.0\.0\.1:\d+\/\S*|localhost:\d+\/\S*/g) ?? []) if (!/:4000\b/.test(url)) expect(url, file).toContain(`:${port}/`)
      }
    })
  }
})
