// `igw control-plane` and `igw audit verify`. Flags are parsed by proxy/cli.ts (one flag table
// for the whole CLI, each with an IGW_* twin); this module turns them into a running service.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { ConfigError, parseConfigText } from '../config/load.ts'
import { splitListenAddress } from '../config/primitives.ts'
import { redactUrlCredentials } from '../config/redact.ts'
import { verifyAudit } from './audit.ts'
import type { AuthOptions } from './auth.ts'
import { openDb } from './db.ts'
import { loadPluginTrust } from './plugin-trust.ts'
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
  'log-level'?: string
  'plugin-trust'?: string
  'metrics-listen'?: string
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
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('--metrics-listen', [`expected host:port, :port or off, got "${text}"`])
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

function readSeed(path: string): Doc {
  const raw = parseConfigText(readFileSync(path, 'utf8'), path)
  try {
    validateDocument(raw)
  } catch (err) {
    if (err instanceof ValidationFailed) throw new ConfigError(path, err.problems)
    throw err
  }
  return raw as Doc
}

export async function runControlPlane(flags: ControlPlaneFlags): Promise<ControlPlane> {
  const db = flags.db ?? DEFAULT_DB
  const listen = splitListenAddress(/^\d+$/.test(flags.listen ?? '') ? `:${flags.listen}` : (flags.listen ?? ':7070'))
  const auth = authOptions(flags)
  if (!auth.jwksFile && !auth.publicKeyFile && !auth.secret) {
    throw new ConfigError('igw control-plane', ['needs a way to verify admin tokens: --auth-jwks F, --auth-public-key F or --auth-secret S (IGW_AUTH_JWKS, IGW_AUTH_PUBLIC_KEY, IGW_AUTH_SECRET)'])
  }
  if (!db.startsWith('sqlite:') && !db.startsWith('postgres://') && !db.startsWith('postgresql://')) throw new ConfigError('--db', [`expected sqlite:<path> or postgres://…, got "${db}"`])
  const metricsListen = metricsListenAddress(flags['metrics-listen'])
  const pluginTrust = flags['plugin-trust'] ? loadPluginTrust(flags['plugin-trust']) : undefined
  try {
    return await startControlPlane({
      db,
      host: listen.host,
      port: listen.port,
      auth,
      signingKey: loadOrCreateSigningKey(flags['signing-key'] ?? defaultSigningKeyPath(db)),
      ...(flags.config ? { seed: readSeed(flags.config) } : {}),
      ...(metricsListen ? { metricsListen } : {}),
      ...(pluginTrust ? { pluginTrust } : {}),
    })
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const e = err as NodeJS.ErrnoException
    if (e.code === 'EADDRINUSE') {
      const which = metricsListen !== undefined && (e as NodeJS.ErrnoException & { port?: number }).port === metricsListen.port ? '--metrics-listen' : '--listen'
      throw new ConfigError(which, [`${which === '--listen' ? (flags.listen ?? ':7070') : (flags['metrics-listen'] ?? DEFAULT_METRICS_LISTEN)} is taken`])
    }
    if (e.code === 'ECONNREFUSED' || e.code === 'ENOTFOUND' || /password|authentication|does not exist/i.test(e.message)) throw new ConfigError('--db', [`cannot open ${redactUrlCredentials(db)}: ${e.message}`])
    throw new ConfigError('igw control-plane', [e.message])
  }
}

/** `igw audit verify`: exit 0 when intact; 1 with every broken entry named otherwise. */
export async function runAuditVerify(flags: ControlPlaneFlags & { 'public-key'?: string }): Promise<boolean> {
  const spec = flags.db ?? DEFAULT_DB
  const keyPath = flags['signing-key'] ?? defaultSigningKeyPath(spec)
  let pem: string
  try {
    pem = readFileSync(keyPath, 'utf8')
  } catch (err) {
    throw new Error(`cannot read the control plane key ${keyPath} (--signing-key, a public or private PEM): ${(err as Error).message}`)
  }
  const db = openDb(spec)
  try {
    const r = await verifyAudit(db, loadPublicKey(pem))
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
