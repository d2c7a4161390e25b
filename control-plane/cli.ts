// `igw control-plane` and `igw audit verify`. Flags are parsed by proxy/cli.ts (one flag table
// for the whole CLI, each with an IGW_* twin); this module turns them into a running service.
import type { KeyObject } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { ConfigError, parseConfigText } from '../config/load.ts'
import { splitListenAddress } from '../config/primitives.ts'
import { redactUrlCredentials } from '../config/redact.ts'
import { exposedMode } from '../filters/dlp/keyring.ts'
import { verifyAudit } from './audit.ts'
import type { AuthOptions } from './auth.ts'
import { openDb } from './db.ts'
import { pino, type Logger } from 'pino'
import { createLogger } from '../proxy/log.ts'
import { loadPluginTrust } from './plugin-trust.ts'
import { MigrationFailed } from './migrations.ts'
import type { Doc } from './resources.ts'
import { startControlPlane, type ControlPlane } from './server.ts'
import { loadOrCreateSigningKey, loadPublicKey } from './signing.ts'
import { validateDocument, ValidationFailed } from './store.ts'

export interface ControlPlaneFlags {
  db?: string
  listen?: string
  config?: string
  'signing-key'?: string
  'auth-jwks'?: string
  'auth-public-key'?: string
  'auth-secret'?: string
  'auth-issuer'?: string
  'auth-audience'?: string
  'auth-require-exp'?: boolean
  'previous-keys'?: string
  'log-level'?: string
  'plugin-trust'?: string
  'metrics-listen'?: string
  'shutdown-grace-ms'?: string
}

export const DEFAULT_DB = 'sqlite:./data/igw.db'
/** Beside the proxy's admin port (:9901), so one host can run both. */
export const DEFAULT_METRICS_LISTEN = ':9902'

/** `:9902`, `127.0.0.1:9902`, `9902`; `off` serves no metrics. Throws ConfigError. */
export function metricsListenAddress(flag: string | undefined): { host?: string; port: number } | undefined {
  const text = flag ?? DEFAULT_METRICS_LISTEN
  if (text === 'off') return undefined
  const { host, port } = splitListenAddress(/^\d+$/.test(text) ? `:${text}` : text)
  if (!text.includes(':') && !/^\d+$/.test(text)) throw new ConfigError('--metrics-listen', [`expected host:port, :port or off, got "${text}"`])
  // "127.0.0.1:" is port Number("") = 0: a random port nobody scrapes, taken without a word.
  if (!/^\d+$/.test(text.slice(text.lastIndexOf(':') + 1)) || !Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('--metrics-listen', [`expected host:port, :port or off, got "${text}"`])
  return host === undefined ? { port } : { host, port }
}

/** The signing key sits beside a SQLite file, or in ./data for PostgreSQL, unless given. */
export function defaultSigningKeyPath(db: string): string {
  if (db.startsWith('sqlite:') && db !== 'sqlite::memory:' && db !== 'sqlite:') return join(dirname(db.slice(7)), 'signing-key.pem')
  return './data/signing-key.pem'
}

export function authOptions(flags: ControlPlaneFlags): AuthOptions {
  const a: AuthOptions = {}
  if (flags['auth-jwks']) a.jwksFile = flags['auth-jwks']
  if (flags['auth-public-key']) a.publicKeyFile = flags['auth-public-key']
  if (flags['auth-secret']) a.secret = flags['auth-secret']
  if (flags['auth-issuer']) a.issuer = flags['auth-issuer']
  if (flags['auth-audience']) a.audience = flags['auth-audience']
  if (flags['auth-require-exp']) a.requireExpiration = true
  return a
}

/** `--listen`: `:7070`, `127.0.0.1:7070`, `[::1]:7070` or `7070`. Throws ConfigError naming the flag and what was typed. */
export function controlPlaneListenAddress(flag: string | undefined): { host?: string; port: number } {
  const text = flag ?? ':7070'
  const { host, port } = splitListenAddress(/^\d+$/.test(text) ? `:${text}` : text)
  // Node's own message ("options.port should be >= 0 and < 65536. Received type number (NaN)")
  // named neither the flag nor the value typed.
  if (!/^\d+$/.test(text.slice(text.lastIndexOf(':') + 1)) || !Number.isInteger(port) || port > 65535) {
    throw new ConfigError('--listen', [`expected host:port or :port with a port from 0 to 65535, got "${text}"`])
  }
  return host === undefined ? { port } : { host, port }
}

/**
 * pg parses the URL only when it first connects, and its error then is WHATWG URL's bare "Invalid
 * URL" (a port above 65535, a raw "/" or "#" in the password, an unclosed "[" of an IPv6 host):
 * the start said "igw control-plane: Invalid URL", naming neither the flag nor the value.
 */
function invalidDbUrl(err: unknown, spec: string): ConfigError | undefined {
  const cause = (err as { cause?: unknown }).cause ?? err
  if ((cause as { code?: unknown } | null)?.code !== 'ERR_INVALID_URL') return undefined
  return new ConfigError('--db', [`"${redactUrlCredentials(spec)}" is not a valid URL: expected postgres://user:password@host:port/database (percent-encode "/", "?" and "#" in the password)`])
}

/** What a driver said, from under the DatabaseUnavailable wrapper that only says "unavailable". */
function driverMessage(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause
  return cause instanceof Error ? cause.message : (err as Error).message
}

function readSeed(path: string): Doc {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(path, [`cannot read file: ${(err as Error).message}`])
  }
  const raw = parseConfigText(text, path)
  try {
    validateDocument(raw)
  } catch (err) {
    if (err instanceof ValidationFailed) throw new ConfigError(path, err.problems)
    throw err
  }
  return raw as Doc
}

/** Why the system refused an address to listen on (the proxy's and the demo's words). */
const LISTEN_REFUSED: Record<string, string> = {
  EADDRINUSE: 'is taken',
  EADDRNOTAVAIL: 'is not available on this host [EADDRNOTAVAIL]',
  EACCES: 'is refused: permission denied (ports below 1024 need privileges) [EACCES]',
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** The longest `--shutdown-grace-ms` taken: an hour (a longer drain is a stuck process, not a grace). */
export const MAX_SHUTDOWN_GRACE_MS = 3_600_000

/**
 * `--shutdown-grace-ms` (IGW_SHUTDOWN_GRACE_MS): how long SIGTERM lets admin requests in flight
 * finish; undefined (the server's 10 s default) when not given. Decimal digits from 0 to an hour;
 * anything else throws ConfigError naming the flag (not silently the default, nor NaN: "no grace").
 */
export function shutdownGraceMs(flag: string | undefined): number | undefined {
  if (flag === undefined) return undefined
  const n = /^\d{1,10}$/.test(flag.trim()) ? Number(flag.trim()) : Number.NaN
  if (!Number.isSafeInteger(n) || n > MAX_SHUTDOWN_GRACE_MS) throw new ConfigError('--shutdown-grace-ms', [`expected milliseconds from 0 to ${MAX_SHUTDOWN_GRACE_MS}, got "${flag}"`])
  return n
}

/** `--log-level` (IGW_LOG_LEVEL): one of pino's levels, `info` by default. Throws ConfigError. */
export function controlPlaneLogLevel(flag: string | undefined): (typeof LOG_LEVELS)[number] {
  const level = flag ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new ConfigError('--log-level', [`expected one of ${LOG_LEVELS.join(' | ')}, got "${level}"`])
  return level as (typeof LOG_LEVELS)[number]
}

export async function runControlPlane(flags: ControlPlaneFlags): Promise<ControlPlane & { logger: Logger }> {
  const db = flags.db ?? DEFAULT_DB
  // The proxy's log format (level names, ISO time, pid, credentials redacted): `igw demo` and a
  // log shipper read both in one stream. Sync writes, as the proxy's control-plane client: an
  // async stdout with its reader gone retried EPIPE at exit.
  const logger = createLogger(controlPlaneLogLevel(flags['log-level']), pino.destination({ dest: 1, sync: true }), { component: 'control-plane' })
  const listen = controlPlaneListenAddress(flags.listen)
  const auth = authOptions(flags)
  if (!auth.jwksFile && !auth.publicKeyFile && !auth.secret) {
    throw new ConfigError('igw control-plane', ['needs a way to verify admin tokens: --auth-jwks F, --auth-public-key F or --auth-secret S (IGW_AUTH_JWKS, IGW_AUTH_PUBLIC_KEY, IGW_AUTH_SECRET)'])
  }
  if (!db.startsWith('sqlite:') && !db.startsWith('postgres://') && !db.startsWith('postgresql://')) throw new ConfigError('--db', [`expected sqlite:<path> or postgres://…, got "${redactUrlCredentials(db)}"`])
  const metricsListen = metricsListenAddress(flags['metrics-listen'])
  const graceMs = shutdownGraceMs(flags['shutdown-grace-ms'])
  const pluginTrust = flags['plugin-trust'] ? loadPluginTrust(flags['plugin-trust']) : undefined
  // GET /v1/audit/verify checks entries signed before a key replacement with the key that signed them.
  const previous = previousKeys(flags['previous-keys'])
  const seed = flags.config ? readSeed(flags.config) : undefined
  const keyPath = flags['signing-key'] ?? defaultSigningKeyPath(db)
  let signingKey: ReturnType<typeof loadOrCreateSigningKey>
  try {
    signingKey = loadOrCreateSigningKey(keyPath)
  } catch (err) {
    // Named as the flag: the key's own error (a bare ENOTDIR from a --db path, say) said nothing of it.
    const e = err as NodeJS.ErrnoException
    const where = flags['signing-key'] === undefined ? ` (the default place, beside the --db file; --signing-key names another)` : ''
    throw new ConfigError('--signing-key', [`${e.message.includes(keyPath) ? e.message : `${keyPath}: ${e.message}`}${where}`])
  }
  let cp: ControlPlane
  try {
    cp = await startControlPlane({
      db,
      host: listen.host,
      port: listen.port,
      auth,
      signingKey,
      ...(seed ? { seed, seedFile: flags.config! } : {}),
      ...(metricsListen ? { metricsListen } : {}),
      ...(pluginTrust ? { pluginTrust } : {}),
      ...(previous.length > 0 ? { previousKeys: previous } : {}),
      ...(graceMs !== undefined ? { shutdownGraceMs: graceMs } : {}),
      logger,
    })
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const e = err as NodeJS.ErrnoException
    const reason = e.syscall === 'listen' && e.code !== undefined ? LISTEN_REFUSED[e.code] : undefined
    if (reason !== undefined) {
      const which = metricsListen !== undefined && (e as NodeJS.ErrnoException & { port?: number }).port === metricsListen.port ? '--metrics-listen' : '--listen'
      // Exit 69 (EX_UNAVAILABLE) with one line, as for the proxy's addresses: the environment
      // refused it, the config is fine (78 told scripts to fix the config). An address not on
      // this host or a privileged port was "igw control-plane: invalid config", exit 78, with
      // Node's words naming neither flag.
      const taken = Object.assign(new Error(`${which} ${which === '--listen' ? (flags.listen ?? ':7070') : (flags['metrics-listen'] ?? DEFAULT_METRICS_LISTEN)} ${reason}`), { name: 'StartupError', kind: 'listen' })
      throw taken
    }
    const badUrl = invalidDbUrl(err, db)
    if (badUrl !== undefined) throw badUrl
    // Its own words name the step; the driver's alone would not say the start was migrating.
    if (err instanceof MigrationFailed) throw new ConfigError('--db', [`${redactUrlCredentials(db)}: ${err.message}`])
    // The store failed to open: named as the database, with the driver's own words (not "the
    // database is unavailable", a bare EEXIST from mkdir, or SQLite's "unable to open").
    const cause = ((err as { cause?: unknown }).cause ?? err) as NodeJS.ErrnoException
    const dbFile = db.startsWith('sqlite:') ? resolve(db.slice('sqlite:'.length)) : undefined
    const onDbPath = dbFile !== undefined && typeof e.path === 'string' && (dbFile === resolve(e.path) || dbFile.startsWith(`${resolve(e.path)}/`))
    if ((err as Error).name === 'DatabaseUnavailable' || cause.code === 'ECONNREFUSED' || cause.code === 'ENOTFOUND' || cause.code?.startsWith('ERR_SQLITE') || onDbPath || /password|authentication|does not exist/i.test(e.message)) {
      throw new ConfigError('--db', [`cannot open ${redactUrlCredentials(db)}: ${driverMessage(err)}`])
    }
    throw new ConfigError('igw control-plane', [e.message])
  }
  // The private key signs every snapshot proxies apply and every audit entry: whoever may read it
  // can forge both. Warned, not refused, with the DLP keyring's rule (others' access or group
  // write; a pod's fsGroup read is fine): a Kubernetes Secret is mounted 0644 unless told otherwise.
  // Once started: a start that fails says only why it failed.
  const exposed = exposedMode(statSync(keyPath, { throwIfNoEntry: false })?.mode ?? 0)
  if (exposed !== undefined) {
    logger.warn({ file: keyPath, mode: exposed }, `signing key ${keyPath} has mode ${exposed}: users other than the one igw runs as may read or change it (and sign snapshots and audit entries as this control plane); make it 0600 (or 0400)`)
  }
  return Object.assign(cp, { logger })
}

/**
 * `--previous-keys F1,F2` (IGW_PREVIOUS_KEYS): public or private PEM files of signing keys replaced
 * before, so audit entries they signed still verify. Throws ConfigError naming the flag and file.
 */
export function previousKeys(list: string | undefined): KeyObject[] {
  const keys: KeyObject[] = []
  for (const file of (list ?? '').split(',').map((f) => f.trim()).filter(Boolean)) {
    try {
      keys.push(loadPublicKey(readFileSync(file, 'utf8')))
    } catch (err) {
      throw new ConfigError('--previous-keys', [`${file}: not a readable ed25519 PEM key (public or private): ${(err as Error).message}`])
    }
  }
  return keys
}

/** `igw audit verify`: exit 0 when intact; 1 with every broken entry named otherwise. */
export async function runAuditVerify(flags: ControlPlaneFlags): Promise<boolean> {
  const spec = flags.db ?? DEFAULT_DB
  const keyPath = flags['signing-key'] ?? defaultSigningKeyPath(spec)
  // Exit 1 means "tampered" to a script: a check that could not run is a ConfigError (exit 78,
  // one line naming the flag), never an uncaught stack trace with the same exit 1.
  // The database first: the default key sits beside it, so a mistyped --db path also misses the
  // key, and "cannot read …/signing-key.pem" sent the operator after the wrong flag.
  if (spec.startsWith('sqlite:')) {
    // Opening a SQLite path creates the file (and its directories): a mistyped --db made an
    // empty database and reported a crash instead of "no such database".
    const path = spec.slice('sqlite:'.length)
    if (path === '' || path === ':memory:') throw new ConfigError('--db', ['an in-memory database has no audit log to verify; name the control plane\'s SQLite file'])
    if (!existsSync(path)) throw new ConfigError('--db', [`no database at ${path}`])
  } else if (!spec.startsWith('postgres://') && !spec.startsWith('postgresql://')) {
    throw new ConfigError('--db', [`expected sqlite:<path> or postgres://…, got "${redactUrlCredentials(spec)}"`])
  }
  let pem: string
  try {
    pem = readFileSync(keyPath, 'utf8')
  } catch (err) {
    throw new ConfigError('--signing-key', [`cannot read the control plane key ${keyPath} (a public or private PEM): ${(err as Error).message}`])
  }
  let publicKey: KeyObject
  try {
    publicKey = loadPublicKey(pem)
  } catch (err) {
    throw new ConfigError('--signing-key', [`${keyPath} is not an ed25519 PEM key (public or private): ${(err as Error).message}`])
  }
  // Keys replaced before (a documented key replacement): entries they signed name their key id
  // and verify with them; without them each older entry reads as signed by an unknown key.
  const keys: KeyObject[] = [publicKey, ...previousKeys(flags['previous-keys'])]
  let db: ReturnType<typeof openDb>
  try {
    db = openDb(spec)
  } catch (err) {
    throw new ConfigError('--db', [`cannot open ${redactUrlCredentials(spec)}: ${driverMessage(err)}`])
  }
  try {
    let r: Awaited<ReturnType<typeof verifyAudit>>
    try {
      r = await verifyAudit(db, keys)
    } catch (err) {
      const badUrl = invalidDbUrl(err, spec)
      if (badUrl !== undefined) throw badUrl
      const msg = driverMessage(err)
      throw new ConfigError('--db', [/no such table|relation .* does not exist/i.test(msg) ? `${redactUrlCredentials(spec)} is not an igw control plane database (${msg})` : `cannot read the audit log in ${redactUrlCredentials(spec)}: ${msg}`])
    }
    if (r.ok) {
      console.log(`audit log OK: ${r.entries} entries, chain intact, signatures valid; head ${r.headHash}`)
      return true
    }
    console.error(`audit log TAMPERED: ${r.problems.length} problem(s) in ${r.entries} entries`)
    for (const p of r.problems) console.error(`  seq ${p.seq}: ${p.problem}`)
    return false
  } finally {
    await db.close()
  }
}
