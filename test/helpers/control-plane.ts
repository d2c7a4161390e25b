// A real control plane for a test: in-process HTTP server on 127.0.0.1:0 over a real SQLite file
// or a real PostgreSQL database, with an HS256 secret to mint admin and proxy tokens.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino, type Logger } from 'pino'
import { mintToken } from '../../control-plane/auth.ts'
import type { TrustedKeys } from '../../control-plane/plugin-package.ts'
import type { Doc } from '../../control-plane/resources.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { startDemoBackend, type DemoBackend } from './backends.ts'
import { spawnIgw, type SpawnedIgw } from './proxy.ts'

export const TEST_AUTH_SECRET = 'test-secret-0123456789abcdef0123456789'

export interface TestControlPlane extends ControlPlane {
  dir: string
  dbSpec: string
  keyPath: string
  token(claims: { sub?: string; roles?: string[]; attrs?: string[]; tenant?: string }): Promise<string>
  /** fetch with a bearer token (admin role unless given). */
  api(path: string, init?: RequestInit & { token?: string }): Promise<Response>
}

export function seedDocument(backendUrl = 'http://127.0.0.1:9'): Doc {
  return {
    mode: 'sidecar',
    upstreams: { backend: { url: backendUrl } },
    tenants: { acme: { tier: 'gold' }, globex: { tier: 'silver', timezone: 'America/New_York' } },
    routes: [{ name: 'graphql', upstream: 'backend', filters: [{ name: 'request-id' }, { name: 'tenant', defaultTenant: 'acme' }] }],
  }
}

/** Also serves GET /metrics on 127.0.0.1:0 (`metricsUrl`). */
export async function startTestControlPlane(opts: { db?: string; seed?: Doc | null; dir?: string; port?: number; pluginTrust?: TrustedKeys; logger?: Logger } = {}): Promise<TestControlPlane> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'igw-cp-'))
  const dbSpec = opts.db ?? `sqlite:${join(dir, 'igw.db')}`
  const keyPath = join(dir, 'signing-key.pem')
  const cp = await startControlPlane({
    db: dbSpec,
    host: '127.0.0.1',
    port: opts.port ?? 0,
    auth: { secret: TEST_AUTH_SECRET },
    signingKey: loadOrCreateSigningKey(keyPath),
    ...(opts.seed === null ? {} : { seed: opts.seed ?? seedDocument() }),
    logger: opts.logger ?? pino({ level: 'silent' }),
    metricsListen: { host: '127.0.0.1', port: 0 },
    ...(opts.pluginTrust ? { pluginTrust: opts.pluginTrust } : {}),
  })
  const admin = await mintToken(TEST_AUTH_SECRET, { sub: 'test-admin', roles: ['admin'] })
  return Object.assign(cp, {
    dir,
    dbSpec,
    keyPath,
    token: (c: { sub?: string; roles?: string[]; attrs?: string[]; tenant?: string }) => mintToken(TEST_AUTH_SECRET, { sub: c.sub ?? 'someone', ...c }),
    api: (path: string, init: RequestInit & { token?: string } = {}) => {
      const headers = new Headers(init.headers)
      if (!headers.has('authorization') && init.token !== '') headers.set('authorization', `Bearer ${init.token ?? admin}`)
      if (init.body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json')
      return fetch(`${cp.url}${path}`, { ...init, headers })
    },
  })
}

/** A pino logger whose JSON lines land in `lines` (parsed). */
export function capturingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) })
  return { logger, lines }
}

/** One sample's value from Prometheus text, labels matched exactly (undefined: no such series). */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',')
  for (const line of text.split('\n')) {
    // Label values may hold braces (route="/v1/tenants/{id}"): the label set ends at the last "}".
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m || m[1] !== name) continue
    const got = (m[2] ?? '')
      .split(/,(?=[a-zA-Z_]\w*=")/)
      .filter(Boolean)
      .sort()
      .join(',')
    if (got === want) return Number(m[3])
  }
  return undefined
}

/** `igw proxy` fed by a control plane: the argument list (without the token, which goes in the environment). */
export function connectedProxyArgs(o: { cpUrl: string; keyFile: string; stateDir: string; id: string; workers?: number }): string[] {
  return ['proxy', '--control-plane', o.cpUrl, '--control-plane-key', o.keyFile, '--state-dir', o.stateDir, '--proxy-id', o.id, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', String(o.workers ?? 1)]
}

/** The environment such a proxy needs: a proxy-role token (minted without the control plane object, which may be down) and the usage interval. */
export async function connectedProxyEnv(sub: string, usageIntervalMs = 60_000): Promise<NodeJS.ProcessEnv> {
  return { IGW_CONTROL_PLANE_TOKEN: await mintToken(TEST_AUTH_SECRET, { sub, roles: ['proxy'] }), IGW_USAGE_INTERVAL_MS: String(usageIntervalMs) }
}

/** The config version a running proxy serves (its admin /config). */
export async function runningVersion(p: { adminUrl: string }): Promise<number> {
  return ((await (await fetch(`${p.adminUrl}/config`)).json()) as { version: number }).version
}

/** A proxy as GET /v1/proxies lists it. */
export interface ProxyRow {
  id: string
  connected: boolean
  appliedVersion: number | null
  lastNack: { version: number; error: string; at: string } | null
}

/**
 * The demo backend, a control plane that can be stopped and started again on the same
 * directory, database, signing key and port, and the `igw proxy` processes a test connects to
 * it. `close()` stops them all and removes the temporary folders. The control plane's public key
 * is written to `keyFile` on first start (what a proxy pins with --control-plane-key).
 */
export class ProxyFleet {
  cp: TestControlPlane | undefined = undefined
  readonly cpDir: string
  /** Scratch folder for the test: state dirs, key files. */
  readonly work: string
  readonly keyFile: string
  #backend: DemoBackend | undefined = undefined
  readonly #proxies: SpawnedIgw[] = []
  #port = 0

  constructor(name: string) {
    this.cpDir = mkdtempSync(join(tmpdir(), `igw-${name}-cp-`))
    this.work = mkdtempSync(join(tmpdir(), `igw-${name}-`))
    this.keyFile = join(this.work, 'cp.pub.pem')
  }

  get backendUrl(): string {
    return this.#backend!.url
  }

  get cpUrl(): string {
    return `http://127.0.0.1:${this.#port}`
  }

  /** Starts the backend and the control plane; its database is seeded with the backend as upstream. */
  async start(): Promise<TestControlPlane> {
    this.#backend = await startDemoBackend({ host: '127.0.0.1', port: 0 })
    return this.startCp()
  }

  /** (Re)start the control plane; a database it already has is kept. */
  async startCp(): Promise<TestControlPlane> {
    const first = this.#port === 0
    this.cp = await startTestControlPlane({ dir: this.cpDir, port: this.#port, seed: seedDocument(this.#backend!.url) })
    this.#port = this.cp.port
    if (first) writeFileSync(this.keyFile, this.cp.store.key.publicKeyPem)
    return this.cp
  }

  async stopCp(): Promise<void> {
    const cp = this.cp
    this.cp = undefined
    await cp?.close()
  }

  /** Start `igw proxy --proxy-id <id>` against this control plane, its state in `stateDir`. */
  async proxy(id: string, stateDir: string, o: { keyFile?: string; workers?: number; extraArgs?: string[]; usageIntervalMs?: number } = {}): Promise<SpawnedIgw> {
    const args = [...connectedProxyArgs({ cpUrl: this.cpUrl, keyFile: o.keyFile ?? this.keyFile, stateDir, id, ...(o.workers ? { workers: o.workers } : {}) }), ...(o.extraArgs ?? [])]
    const p = await spawnIgw(args, await connectedProxyEnv(`proxy-${id}`, o.usageIntervalMs))
    this.#proxies.push(p)
    return p
  }

  async rows(): Promise<{ headVersion: number; items: ProxyRow[] }> {
    return (await (await this.cp!.api('/v1/proxies')).json()) as { headVersion: number; items: ProxyRow[] }
  }

  async row(id: string): Promise<ProxyRow | undefined> {
    return (await this.rows()).items.find((i) => i.id === id)
  }

  /** A config change (a tenant put): resolves with the version it committed. */
  async commitTenant(name: string): Promise<number> {
    return ((await (await this.cp!.api(`/v1/tenants/${name}`, { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })).json()) as { version: number }).version
  }

  async close(): Promise<void> {
    for (const p of this.#proxies) await p.stop()
    await this.stopCp()
    await this.#backend?.close()
    rmSync(this.work, { recursive: true, force: true })
    rmSync(this.cpDir, { recursive: true, force: true })
  }
}
