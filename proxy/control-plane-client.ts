// The proxy's side of config push. `igw proxy --control-plane URL --control-plane-token T`:
//  1. boot: take the head snapshot from the control plane's event stream; if the control plane
//     cannot be reached, boot from the last good signed snapshot on disk (signature checked with
//     the pinned control plane key); only then fall back to --config/--upstream.
//  2. run: every later snapshot is verified (ed25519), validated with the proxy's own schema and
//     applied through the supervisor; ACKed when every worker took it, NACKed with the error
//     otherwise (the running config stays). Good snapshots are persisted as last-known-good.
//  3. report per-tenant usage every few seconds (numbered, retried in order, never double-counted).
// Unlike Envoy, which keeps last-known-good only in memory, a restarted proxy keeps serving here.
import { createPublicKey, randomUUID, verify, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { request } from 'undici'
import { ConfigError, validateConfig } from '../config/load.ts'
import type { GatewayConfig } from '../config/schema.ts'
import type { ProxyHandle } from './supervisor.ts'
import type { UsageSnapshot } from './tenant-usage.ts'

export interface ControlPlaneClientOptions {
  url: string
  token: string
  /** Directory for last-good.json, the pinned key and the proxy id (default .igw-state). */
  stateDir: string
  /** PEM public key of the control plane; else pinned on first contact (trust on first use). */
  publicKeyPem?: string
  proxyId?: string
  /** Turns the document's raw form into this proxy's config (flag overrides, then validation). */
  toConfig: (document: unknown, source: string) => GatewayConfig
  usageIntervalMs?: number
  /** How long boot waits for the control plane before using the file. */
  bootTimeoutMs?: number
  log: (level: 'info' | 'warn' | 'error', obj: Record<string, unknown>, msg: string) => void
}

interface Envelope {
  payload: string
  keyId?: string
  signature: string
}

interface Payload {
  version: number
  digest: string
  issuedAt: string
  document: unknown
}

export class SnapshotRejected extends Error {}

/** Verify an envelope with the key; returns the payload. Throws SnapshotRejected saying why. */
export function verifyEnvelope(envelope: unknown, key: KeyObject): Payload {
  const e = envelope as Partial<Envelope> | null
  if (e === null || typeof e !== 'object' || typeof e.payload !== 'string' || typeof e.signature !== 'string') throw new SnapshotRejected('not a signed snapshot')
  let ok = false
  try {
    ok = verify(null, Buffer.from(e.payload), key, Buffer.from(e.signature, 'base64'))
  } catch {
    ok = false
  }
  if (!ok) throw new SnapshotRejected('signature does not verify with the control plane key')
  const p = JSON.parse(e.payload) as Payload
  if (!Number.isInteger(p.version) || p.version < 1) throw new SnapshotRejected('payload has no valid version')
  return p
}

type SseEvent = { event: string; data: string; id?: string }

/** Parse a text/event-stream body into events (the subset the control plane sends). */
async function* sseEvents(body: Readable): AsyncGenerator<SseEvent> {
  let buf = ''
  let ev: SseEvent = { event: 'message', data: '' }
  for await (const chunk of body) {
    buf += (chunk as Buffer).toString('utf8')
    let i
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i).replace(/\r$/, '')
      buf = buf.slice(i + 1)
      if (line === '') {
        if (ev.data !== '') yield ev
        ev = { event: 'message', data: '' }
      } else if (line.startsWith(':')) {
        continue
      } else {
        const c = line.indexOf(':')
        const field = c === -1 ? line : line.slice(0, c)
        const value = c === -1 ? '' : line.slice(c + 1).replace(/^ /, '')
        if (field === 'event') ev.event = value
        else if (field === 'data') ev.data = ev.data === '' ? value : `${ev.data}\n${value}`
        else if (field === 'id') ev.id = value
      }
    }
  }
}

export class ControlPlaneClient {
  readonly #o: ControlPlaneClientOptions
  readonly proxyId: string
  readonly bootId = randomUUID()
  #key: KeyObject | undefined
  #version = 0
  #handle: ProxyHandle | undefined
  #closed = false
  #abort = new AbortController()
  #usageTimer: NodeJS.Timeout | undefined
  #pending: { seq: number; at: string; tenants: UsageSnapshot }[] = []
  #seq = 0
  #connected = false
  /** A snapshot that arrived while the proxy was still starting; applied on attach(). */
  #early: string | undefined
  /** Resolves the first snapshot seen on the stream during boot. */
  #first: ((p: { payload: Payload; envelope: Envelope }) => void) | undefined
  /** Resolves when the first connection attempt during boot failed (no need to wait longer). */
  #firstFailure: (() => void) | undefined

  constructor(o: ControlPlaneClientOptions) {
    this.#o = { ...o, url: o.url.replace(/\/+$/, '') }
    mkdirSync(o.stateDir, { recursive: true })
    this.proxyId = o.proxyId ?? this.#stableId()
    if (o.publicKeyPem) this.#key = createPublicKey(o.publicKeyPem)
    else if (existsSync(this.#keyPath)) this.#key = createPublicKey(readFileSync(this.#keyPath, 'utf8'))
  }

  get version(): number {
    return this.#version
  }

  get #keyPath(): string {
    return join(this.#o.stateDir, 'control-plane.pub.pem')
  }

  get lastGoodPath(): string {
    return join(this.#o.stateDir, 'last-good.json')
  }

  #stableId(): string {
    const p = join(this.#o.stateDir, 'proxy-id')
    if (existsSync(p)) return readFileSync(p, 'utf8').trim()
    const id = `${hostname()}-${randomUUID().slice(0, 8)}`
    writeFileSync(p, `${id}\n`)
    return id
  }

  #headers(): Record<string, string> {
    return { authorization: `Bearer ${this.#o.token}` }
  }

  async #ensureKey(): Promise<KeyObject> {
    if (this.#key) return this.#key
    const r = await request(`${this.#o.url}/v1/signing-key`, { headersTimeout: 3_000, bodyTimeout: 3_000 })
    if (r.statusCode !== 200) throw new Error(`GET /v1/signing-key answered ${r.statusCode}`)
    const { publicKeyPem } = (await r.body.json()) as { publicKeyPem: string }
    this.#key = createPublicKey(publicKeyPem)
    writeFileSync(this.#keyPath, publicKeyPem)
    this.#o.log('warn', { keyPath: this.#keyPath }, 'pinned the control plane signing key on first contact (pass --control-plane-key to pin it explicitly)')
    return this.#key
  }

  /**
   * The config to start with: the control plane's head, else the last good snapshot on disk.
   * Returns undefined when neither is available (the caller then uses --config or exits).
   */
  async bootstrap(): Promise<{ config: GatewayConfig; version: number; source: 'control-plane' | 'last-known-good' } | undefined> {
    const timeout = this.#o.bootTimeoutMs ?? 5_000
    const first = new Promise<{ payload: Payload; envelope: Envelope }>((resolve) => (this.#first = resolve))
    const failed = new Promise<undefined>((resolve) => (this.#firstFailure = () => resolve(undefined)))
    void this.#streamLoop()
    const got = await Promise.race([first, failed, new Promise<undefined>((r) => setTimeout(() => r(undefined), timeout).unref())])
    this.#first = undefined // later snapshots (the control plane coming back) go the normal way
    this.#firstFailure = undefined
    if (got !== undefined) {
      try {
        const config = this.#o.toConfig(got.payload.document, `control plane version ${got.payload.version}`)
        this.#version = got.payload.version
        // Written as last-known-good only once the proxy started with it (ackBoot): a head that
        // validates but cannot start here (a file it names is missing) must not replace the
        // snapshot a restart would fall back to.
        this.#bootEnvelope = got.envelope
        return { config, version: got.payload.version, source: 'control-plane' }
      } catch (err) {
        // The head does not validate here (schema skew, a missing file): say so, try the file.
        this.#o.log('error', { version: got.payload.version, error: (err as Error).message }, 'control plane head rejected at boot')
        void this.#ack(got.payload.version, false, (err as Error).message)
      }
    }
    return this.#bootFromLastGood()
  }

  /** The last good snapshot, now the version this proxy runs; undefined when there is none. */
  #bootFromLastGood(): { config: GatewayConfig; version: number; source: 'last-known-good' } | undefined {
    const lkg = this.loadLastGood()
    if (lkg === undefined) return undefined
    this.#version = lkg.version
    return { ...lkg, source: 'last-known-good' }
  }

  /** The persisted snapshot, verified and validated; undefined (with a logged reason) otherwise. */
  loadLastGood(): { config: GatewayConfig; version: number } | undefined {
    const path = this.lastGoodPath
    if (!existsSync(path)) {
      this.#o.log('error', { path }, 'control plane unreachable and no last-known-good snapshot on disk')
      return undefined
    }
    if (this.#key === undefined) {
      this.#o.log('error', { path }, 'refusing the last-known-good snapshot: no control plane key to verify it with (--control-plane-key)')
      return undefined
    }
    try {
      const envelope = JSON.parse(readFileSync(path, 'utf8')) as unknown
      const payload = verifyEnvelope(envelope, this.#key)
      const config = this.#o.toConfig(payload.document, `${path} (version ${payload.version})`)
      this.#o.log('warn', { path, version: payload.version, issuedAt: payload.issuedAt }, 'control plane unreachable: booting from the last-known-good snapshot')
      return { config, version: payload.version }
    } catch (err) {
      this.#o.log('error', { path, error: (err as Error).message }, 'refusing the last-known-good snapshot')
      return undefined
    }
  }

  #persist(envelope: Envelope): void {
    const tmp = `${this.lastGoodPath}.${process.pid}.tmp`
    writeFileSync(tmp, JSON.stringify(envelope), { mode: 0o600 })
    renameSync(tmp, this.lastGoodPath) // atomic: a crash never leaves half a file
  }

  /** Start applying pushed versions to the running proxy, and reporting usage. */
  attach(handle: ProxyHandle): void {
    this.#handle = handle
    const every = this.#o.usageIntervalMs ?? 5_000
    this.#usageTimer = setInterval(() => void this.reportUsage(), every)
    this.#usageTimer.unref()
    const early = this.#early
    this.#early = undefined
    if (early !== undefined && this.#key !== undefined) void this.#onSnapshot(early, this.#key)
  }

  async #streamLoop(): Promise<void> {
    let backoff = 250
    while (!this.#closed) {
      try {
        const key = await this.#ensureKey()
        const q = new URLSearchParams({ proxy: this.proxyId, version: String(this.#version), boot: this.bootId, hostname: hostname() })
        const r = await request(`${this.#o.url}/v1/stream?${q}`, {
          headers: { ...this.#headers(), accept: 'text/event-stream' },
          signal: this.#abort.signal,
          headersTimeout: 5_000,
          bodyTimeout: 45_000, // three missed heartbeats: the control plane is gone
        })
        if (r.statusCode !== 200) {
          const text = await r.body.text()
          throw new Error(`stream answered ${r.statusCode}: ${text.slice(0, 300)}`)
        }
        if (!this.#connected) this.#o.log('info', { url: this.#o.url, proxyId: this.proxyId, version: this.#version }, 'connected to the control plane')
        this.#connected = true
        backoff = 250
        for await (const ev of sseEvents(r.body)) {
          if (ev.event !== 'snapshot') continue
          await this.#onSnapshot(ev.data, key)
        }
      } catch (err) {
        if (this.#closed) return
        if (this.#connected) this.#o.log('warn', { error: (err as Error).message }, 'lost the control plane; serving the running config and retrying')
        else if (this.#firstFailure) this.#o.log('warn', { url: this.#o.url, error: (err as Error).message }, 'control plane unreachable')
        this.#connected = false
        this.#firstFailure?.()
      }
      if (this.#closed) return
      await new Promise((r) => setTimeout(r, backoff).unref())
      backoff = Math.min(backoff * 2, 5_000)
    }
  }

  async #onSnapshot(data: string, key: KeyObject): Promise<void> {
    let envelope: Envelope
    let payload: Payload
    try {
      envelope = JSON.parse(data) as Envelope
      payload = verifyEnvelope(envelope, key)
    } catch (err) {
      this.#o.log('error', { error: (err as Error).message }, 'snapshot refused')
      return
    }
    if (this.#first) {
      const f = this.#first
      this.#first = undefined
      f({ payload, envelope })
      return
    }
    if (this.#handle === undefined) {
      this.#early = data // still starting (from the file): applied as soon as the proxy runs
      return
    }
    if (payload.version <= this.#version) return
    let config: GatewayConfig
    try {
      config = this.#o.toConfig(payload.document, `control plane version ${payload.version}`)
    } catch (err) {
      const msg = err instanceof ConfigError ? err.problems.join('; ') : (err as Error).message
      this.#o.log('error', { version: payload.version, error: msg }, 'config version NACKed: invalid here; keeping the running config')
      await this.#ack(payload.version, false, msg)
      return
    }
    const r = await this.#handle.applyConfig(config, payload.version)
    if (r.ok) {
      this.#version = payload.version
      this.#persist(envelope)
      await this.#ack(payload.version, true)
    } else {
      this.#o.log('error', { version: payload.version, error: r.error }, 'config version NACKed: workers refused it; keeping the running config')
      await this.#ack(payload.version, false, r.error ?? 'rejected by the workers')
    }
  }

  async #ack(version: number, ok: boolean, error?: string): Promise<void> {
    try {
      const r = await request(`${this.#o.url}/v1/proxies/${encodeURIComponent(this.proxyId)}/ack`, {
        method: 'POST',
        headers: { ...this.#headers(), 'content-type': 'application/json' },
        body: JSON.stringify({ version, status: ok ? 'ACK' : 'NACK', ...(error ? { error } : {}) }),
        headersTimeout: 5_000,
        bodyTimeout: 5_000,
      })
      await r.body.dump()
    } catch (err) {
      this.#o.log('warn', { version, error: (err as Error).message }, 'could not send ACK/NACK')
    }
  }

  /** The proxy is listening with the boot version: keep it as last-known-good and ACK it. */
  async ackBoot(): Promise<void> {
    if (this.#bootEnvelope !== undefined) {
      try {
        this.#persist(this.#bootEnvelope)
      } catch (err) {
        this.#o.log('error', { path: this.lastGoodPath, error: (err as Error).message }, 'could not write the last-known-good snapshot')
      }
    }
    this.#bootEnvelope = undefined
    await this.#ack(this.#version, true)
  }

  /**
   * The control plane's head validated but the proxy could not start with it: NACK it and fall
   * back as bootstrap() does for a head that does not validate — to the last good snapshot.
   */
  async rejectBoot(error: string): Promise<{ config: GatewayConfig; version: number } | undefined> {
    this.#bootEnvelope = undefined
    await this.#ack(this.#version, false, error)
    this.#version = 0
    return this.#bootFromLastGood()
  }
  #bootEnvelope: Envelope | undefined = undefined

  /** Collect and post usage; failed reports are kept (bounded) and retried in order. */
  async reportUsage(): Promise<void> {
    if (this.#handle === undefined) return
    const tenants = await this.#handle.collectUsage()
    if (Object.keys(tenants).length > 0) this.#pending.push({ seq: ++this.#seq, at: new Date().toISOString(), tenants })
    if (this.#pending.length > 720) this.#pending.splice(0, this.#pending.length - 720) // ~1 h at 5 s
    while (this.#pending.length > 0) {
      const rep = this.#pending[0]!
      try {
        const r = await request(`${this.#o.url}/v1/usage`, {
          method: 'POST',
          headers: { ...this.#headers(), 'content-type': 'application/json' },
          body: JSON.stringify({ proxyId: this.proxyId, bootId: this.bootId, seq: rep.seq, at: rep.at, tenants: rep.tenants }),
          headersTimeout: 5_000,
          bodyTimeout: 5_000,
        })
        await r.body.dump()
        if (r.statusCode >= 500) return
        this.#pending.shift() // 2xx counted (or a duplicate); 4xx would never succeed
      } catch {
        return
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    clearInterval(this.#usageTimer)
    await this.reportUsage().catch(() => undefined)
    this.#closed = true
    this.#abort.abort()
  }
}

/** Run `igw proxy` with a control plane (see the module comment for the boot order). */
export async function startProxyFromControlPlane(opts: ControlPlaneClientOptions, fallback: (() => GatewayConfig) | undefined, start: (config: GatewayConfig, version: number) => Promise<ProxyHandle>): Promise<{ handle: ProxyHandle; client: ControlPlaneClient }> {
  const client = new ControlPlaneClient(opts)
  const boot = await client.bootstrap()
  let handle: ProxyHandle | undefined
  if (boot !== undefined) {
    try {
      handle = await start(boot.config, boot.version)
      opts.log('info', { version: boot.version, source: boot.source }, boot.source === 'control-plane' ? 'config from the control plane' : 'config from the last-known-good snapshot')
      if (boot.source === 'control-plane') await client.ackBoot()
    } catch (err) {
      if (handle !== undefined || boot.source !== 'control-plane') throw err
      // Valid by schema, but it does not start here (a JWKS or keyring file it names is missing,
      // a port is taken): NACK it and go on as if the control plane had not answered.
      const message = (err as Error).message
      opts.log('error', { version: boot.version, error: message }, 'control plane head failed to start here; NACKed, falling back')
      const lkg = await client.rejectBoot(message)
      if (lkg !== undefined) handle = await start(lkg.config, lkg.version)
      else if (fallback === undefined) {
        await client.close()
        throw err
      }
    }
  }
  if (handle === undefined && fallback !== undefined) {
    opts.log('warn', {}, 'no control plane config: starting from --config/--upstream until it answers')
    handle = await start(fallback(), 0)
  }
  if (handle === undefined) {
    await client.close()
    throw new ConfigError('igw proxy', [`no config: the control plane at ${opts.url} did not answer and there is no usable last-known-good snapshot in ${opts.stateDir} (see the lines above)`])
  }
  client.attach(handle)
  return { handle, client }
}

export { validateConfig }
