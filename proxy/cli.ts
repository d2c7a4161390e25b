// `igw` command line. Every flag has an IGW_* environment twin; flags win over the
// environment, which wins over the config file.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { ConfigError, formatIssues, parseConfigText, validateConfig } from '../config/load.ts'
import { originUrl } from '../config/primitives.ts'
import type { GatewayConfig } from '../config/schema.ts'
import { createLogger, LogWindow } from './log.ts'

export const EXIT_CONFIG = 78 // sysexits EX_CONFIG: the config, not the program, is wrong
export const EXIT_LISTEN = 69 // sysexits EX_UNAVAILABLE: an address to listen on is taken or absent
const EXIT_UNAVAILABLE = 69 // sysexits EX_UNAVAILABLE: a program igw runs (the opa CLI) is missing

const FLAGS = {
  config: { type: 'string', short: 'c', env: 'IGW_CONFIG', help: 'config file (YAML or JSON)' },
  listen: { type: 'string', env: 'IGW_LISTEN', help: 'listen address, e.g. :8080 or 127.0.0.1:8080 (proxy default :8080, demo 127.0.0.1:8080, control plane :7070)' },
  'admin-listen': { type: 'string', env: 'IGW_ADMIN_LISTEN', help: 'admin listen address (proxy default :9901, demo 127.0.0.1:9901)' },
  upstream: { type: 'string', env: 'IGW_UPSTREAM', help: 'sidecar shortcut: the one upstream origin, e.g. http://127.0.0.1:4000' },
  workers: { type: 'string', env: 'IGW_WORKERS', help: 'worker threads, a number or "auto" (default: available cores)' },
  redis: { type: 'string', env: 'IGW_REDIS', help: 'redis://host:port for state shared across proxies' },
  'control-plane': { type: 'string', env: 'IGW_CONTROL_PLANE', help: 'control plane URL to take config from' },
  'control-plane-token': { type: 'string', env: 'IGW_CONTROL_PLANE_TOKEN', help: 'bearer token (JWT with the proxy role) for --control-plane' },
  'control-plane-token-file': { type: 'string', env: 'IGW_CONTROL_PLANE_TOKEN_FILE', help: 'file holding that token, read again for every request (a rotated Secret or projected token is used without a restart)' },
  'control-plane-key': { type: 'string', env: 'IGW_CONTROL_PLANE_KEY', help: 'PEM public key that signs snapshots (default: pinned on first contact)' },
  'control-plane-previous-keys': { type: 'string', env: 'IGW_CONTROL_PLANE_PREVIOUS_KEYS', help: 'comma-separated PEM files of control plane keys replaced on purpose: a last-known-good snapshot one signed is still booted from (snapshots from the control plane verify with the current key only)' },
  'state-dir': { type: 'string', env: 'IGW_STATE_DIR', help: 'where a proxy keeps its last-known-good snapshot (default .igw-state)' },
  'proxy-id': { type: 'string', env: 'IGW_PROXY_ID', help: 'this proxy\'s id at the control plane (default: the token\'s "proxy" claim, else host name + a stored random suffix)' },
  db: { type: 'string', env: 'IGW_DB', help: 'control plane store: sqlite:./data/igw.db (default) or postgres://…' },
  'signing-key': { type: 'string', env: 'IGW_SIGNING_KEY', help: 'control plane ed25519 key (PEM; created if missing; default beside the SQLite file)' },
  'previous-keys': { type: 'string', env: 'IGW_PREVIOUS_KEYS', help: 'with `audit verify` and `control-plane`: comma-separated PEM files of signing keys replaced before; an audit entry one signed verifies up to its successor key\'s first entry, then for at most 100 entries and 5 minutes more (a rolling restart); later ones are reported' },
  'auth-jwks': { type: 'string', env: 'IGW_AUTH_JWKS', help: 'control plane: JWKS file verifying admin tokens' },
  'auth-public-key': { type: 'string', env: 'IGW_AUTH_PUBLIC_KEY', help: 'control plane: PEM public key verifying admin tokens' },
  'auth-secret': { type: 'string', env: 'IGW_AUTH_SECRET', help: 'control plane: HS256 secret verifying admin tokens (32+ chars)' },
  'auth-issuer': { type: 'string', env: 'IGW_AUTH_ISSUER', help: 'control plane: required token issuer' },
  'auth-audience': { type: 'string', env: 'IGW_AUTH_AUDIENCE', help: 'control plane: required token audience' },
  'auth-require-exp': { type: 'boolean', env: 'IGW_AUTH_REQUIRE_EXP', help: 'control plane: refuse tokens without an "exp" claim (env: true/1/yes/on or false/0/no/off; --no-auth-require-exp or =false turns it off)' },
  'plugin-trust': { type: 'string', env: 'IGW_PLUGIN_TRUST', help: 'control plane: JWKS-like file of publisher ed25519 keys that may sign plugins' },
  'metrics-listen': { type: 'string', env: 'IGW_METRICS_LISTEN', help: 'control plane: unauthenticated GET /metrics address (default :9902; off: none)' },
  'shutdown-grace-ms': { type: 'string', env: 'IGW_SHUTDOWN_GRACE_MS', help: 'control plane: on SIGTERM, how long admin requests in flight may finish before they are cut (ms, default 10000)' },
  'log-level': { type: 'string', env: 'IGW_LOG_LEVEL', help: 'fatal|error|warn|info|debug|trace|silent' },
  check: { type: 'boolean', help: 'with `policy build`: verify committed bundles are current' },
  help: { type: 'boolean', short: 'h', help: 'show help (`igw help <command>`: that command\'s flags)' },
  version: { type: 'boolean', help: 'print igw\'s version' },
} as const

type FlagName = keyof typeof FLAGS
type BooleanFlag = 'help' | 'version' | 'check' | 'auth-require-exp'

/**
 * The flags each command reads (besides --help and --version). One flag table serves the whole
 * CLI, and a flag typed for a command that does not read it was silently ignored: `igw demo
 * --config igw.yaml` ran the demo's own config, `igw control-plane --redis …` or `igw proxy --db …`
 * started without what was asked. Such a flag is a usage error (exit 2) naming the ones that apply.
 * Only flags typed on the command line are checked: environment twins may be shared by commands.
 */
export const COMMAND_FLAGS: Record<string, readonly FlagName[]> = {
  proxy: ['config', 'listen', 'admin-listen', 'upstream', 'workers', 'redis', 'log-level', 'control-plane', 'control-plane-token', 'control-plane-token-file', 'control-plane-key', 'control-plane-previous-keys', 'state-dir', 'proxy-id'],
  demo: ['listen', 'admin-listen', 'workers', 'redis', 'log-level'],
  'config validate': ['upstream', 'listen', 'admin-listen', 'workers', 'redis', 'log-level'],
  'config schema': [],
  'policy build': ['check'],
  'policy test': [],
  'control-plane': ['config', 'listen', 'db', 'signing-key', 'previous-keys', 'auth-jwks', 'auth-public-key', 'auth-secret', 'auth-issuer', 'auth-audience', 'auth-require-exp', 'plugin-trust', 'metrics-listen', 'shutdown-grace-ms', 'log-level'],
  'audit verify': ['db', 'signing-key', 'previous-keys'],
}

/** igw's version, from package.json (read when asked: most commands never need it). */
export function igwVersion(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version
}
export type Flags = Partial<Record<Exclude<FlagName, BooleanFlag>, string>> & Partial<Record<BooleanFlag, boolean>>

const COMMANDS: [string, string][] = [
  ['proxy', 'run the data-plane proxy'],
  ['demo', 'run a sample GraphQL backend with the proxy in front of it (no Redis, no Docker)'],
  ['config validate F…', 'validate config files and print every problem with its path'],
  ['config schema', 'print the config JSON Schema'],
  ['policy build', 'compile policies/*/ Rego to wasm bundles with the opa CLI (--check: fail if stale)'],
  ['policy test', 'run the Rego unit tests (opa test)'],
  ['control-plane', 'run the control plane (REST /v1, GraphQL /graphql, config push) on :7070'],
  ['audit verify', 'check the control plane\'s audit hash chain and signatures (exit 1 names bad entries)'],
]

const flagLine = (name: string, help?: string): string => {
  const f = (FLAGS as Record<string, { short?: string; env?: string; help: string }>)[name]!
  return `  ${`--${name}${f.short !== undefined ? `, -${f.short}` : ''}`.padEnd(22)} ${f.env !== undefined ? `[${f.env}] ` : ''}${help ?? f.help}`
}

/**
 * A flag that means something else for one command. `igw audit verify --help` said the key is
 * "created if missing": verify only reads it (a missing one exits 78), and a check that made up
 * its own key could never pass. `igw control-plane --help` called --config a "config file", as the
 * proxy's: it only seeds an empty store, and an edited file took no effect at the next start.
 */
const COMMAND_FLAG_HELP: Record<string, Partial<Record<FlagName, string>>> = {
  'audit verify': { 'signing-key': 'the control plane\'s ed25519 key, a private or public PEM (read, never created; default beside the SQLite file)' },
  'control-plane': { config: 'seed document (YAML or JSON), committed as version 1 only when the store is empty; once it holds a version, change the config through the API, not this file' },
}

/** What a command reads besides its flags (`igw demo --help` named neither of its own addresses). */
const COMMAND_ENV: Record<string, string> = {
  demo: `environment:
  IGW_DEMO_BACKEND       the sample backend's address, host:port or :port (default 127.0.0.1:4000)
  IGW_DEMO_CONTROL_PLANE the control plane's address (default 127.0.0.1:7070; taken: any free port)
`,
}

/** What a command's flags do, when it is more than their own lines say. */
const FLAGS_HEADING: Record<string, string> = {
  'config validate': ` (each, or its environment twin, overrides the file's value before it is checked, as \`igw proxy\` applies it):`,
}

const USAGE = `igw — IntelGraph Gateway

usage: igw <command> [flags]

commands:
${COMMANDS.map(([c, h]) => `  ${c.padEnd(18)} ${h}`).join('\n')}

flags (each but --check, --help and --version has an environment twin):
${Object.keys(FLAGS).map((name) => flagLine(name)).join('\n')}
`

/** `igw help <command>` / `igw <command> --help`: that command and the flags it reads; undefined for no such command. */
export function commandUsage(command: string): string | undefined {
  const flags = COMMAND_FLAGS[command]
  const entry = COMMANDS.find(([c]) => c === command || c.startsWith(`${command} `))
  if (flags === undefined || entry === undefined) return undefined
  return `igw ${entry[0]}: ${entry[1]}

usage: igw ${command}${command === 'config validate' ? ' <file>…' : ''} [flags]

flags${flags.length > 0 ? (FLAGS_HEADING[command] ?? ':') : ': none besides --help'}
${[...flags, 'help'].map((name) => flagLine(name, COMMAND_FLAG_HELP[command]?.[name as FlagName])).join('\n')}
${COMMAND_ENV[command] !== undefined ? `\n${COMMAND_ENV[command]}` : ''}`
}

/** The command a flag check and `--help` are about: `proxy`, `config validate`, …; undefined for none known. */
function commandKey(positionals: string[], forHelp = false): string | undefined {
  const [command, sub] = positionals
  if (command === undefined) return undefined
  if (COMMAND_FLAGS[command] !== undefined) return command
  if (sub === undefined) {
    if (!forHelp) return undefined
    // `igw help audit`: the one command under that word
    const under = Object.keys(COMMAND_FLAGS).filter((k) => k.startsWith(`${command} `))
    return under.length === 1 ? under[0] : undefined
  }
  const key = `${command} ${sub}`
  return COMMAND_FLAGS[key] !== undefined ? key : undefined
}

export function parseFlags(argv: string[], env: NodeJS.ProcessEnv = process.env): { flags: Flags; positionals: string[]; given: FlagName[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {}
  for (const [name, f] of Object.entries(FLAGS)) options[name] = 'short' in f ? { type: f.type, short: f.short } : { type: f.type }
  // A boolean flag's "off" form (`--no-auth-require-exp`, `--auth-require-exp=false`) must win over
  // its environment twin (IGW_AUTH_REQUIRE_EXP=1 baked into an image): parseArgs takes `--no-X`
  // (allowNegative); `--X=<word>` is spelled that way first, since parseArgs refuses a value there.
  const args: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const name = stringFlagName(a)
    // A negative number after a flag that takes a value is that value (`--workers -2`): parseArgs
    // reads it as a flag ("argument is ambiguous") and the bad value never reached validation.
    if (name !== undefined && /^-\d/.test(argv[i + 1] ?? '')) {
      args.push(`--${name}=${argv[++i]}`)
      continue
    }
    if (a === '--') {
      args.push(...argv.slice(i))
      break
    }
    const m = /^--([a-z-]+)=(.*)$/i.exec(a)
    if (m === null || (FLAGS as Record<string, { type: string }>)[m[1]!]?.type !== 'boolean') {
      args.push(a)
      continue
    }
    const on = booleanWord(m[2]!)
    if (on === undefined) throw new Error(`--${m[1]}: expected true or false, got ${JSON.stringify(m[2])}`)
    args.push(on ? `--${m[1]}` : `--no-${m[1]}`)
  }
  let parsed
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true, allowNegative: true })
  } catch (err) {
    // Node's text for an unknown flag advises `-- "--verbose"` (a positional, which no command
    // takes here) with an unbalanced quote; say what is wrong instead.
    const code = (err as NodeJS.ErrnoException).code
    const unknown = code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /^Unknown option '([^']+)'/.exec((err as Error).message) : null
    if (unknown !== null) throw new Error(`unknown flag ${unknown[1]}${unknown[1] === '-v' ? ' (did you mean --version?)' : ''}`)
    // A flag without its value (last, or followed by another flag): Node's text ("argument is
    // ambiguous … use '--workers=-XYZ'") said nothing of what the flag takes.
    const option = code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' ? /^Option '(-[^' ]+)/.exec((err as Error).message) : null
    const name = option !== null ? stringFlagName(option[1]!) : undefined
    if (name !== undefined) {
      // (parseArgs fails at the first occurrence with nothing, or a flag-like word, after it)
      const at = args.findIndex((a, i) => stringFlagName(a) === name && (args[i + 1] === undefined || (args[i + 1]!.startsWith('-') && args[i + 1] !== '-')))
      const next = args[at + 1]
      const got = next === undefined ? '' : `, got the flag ${next}${next.startsWith('--') ? '' : ` (if that is the value, write --${name}=${next})`}`
      throw new Error(`--${name} needs a value: ${FLAGS[name].help}${got}`)
    }
    throw err
  }
  const { values, positionals } = parsed
  const flags: Flags = {}
  for (const [name, f] of Object.entries(FLAGS)) {
    const v = values[name]
    if (f.type === 'boolean') {
      if (typeof v === 'boolean') flags[name as BooleanFlag] = v
      else {
        const e = 'env' in f ? env[f.env] : undefined
        const on = e === undefined ? false : booleanWord(e)
        if (on === undefined) throw new Error(`${'env' in f ? f.env : name}: expected true or false, got ${JSON.stringify(e)}`)
        flags[name as BooleanFlag] = on
      }
    } else if (typeof v === 'string') flags[name as Exclude<FlagName, BooleanFlag>] = v
    else if ('env' in f && env[f.env] !== undefined && env[f.env] !== '') flags[name as Exclude<FlagName, BooleanFlag>] = env[f.env]
  }
  return { flags, positionals, given: (Object.keys(FLAGS) as FlagName[]).filter((name) => values[name] !== undefined) }
}

/** The flag taking a value that `arg` names (`--workers`, `-c`), or undefined. */
function stringFlagName(arg: string): Exclude<FlagName, BooleanFlag> | undefined {
  for (const [name, f] of Object.entries(FLAGS)) {
    if (f.type === 'string' && (arg === `--${name}` || ('short' in f && arg === `-${f.short}`))) return name as Exclude<FlagName, BooleanFlag>
  }
  return undefined
}

/** The flag among `names` within two edits of `arg` (`--uptream` → upstream), or undefined. */
function nearestFlag(arg: string, names: readonly FlagName[]): FlagName | undefined {
  const typed = arg.slice(2).toLowerCase()
  let best: { name: FlagName; d: number } | undefined
  for (const name of names) {
    // Levenshtein distance, one row at a time
    let row = Array.from({ length: name.length + 1 }, (_, j) => j)
    for (let i = 1; i <= typed.length; i++) {
      const next = [i]
      for (let j = 1; j <= name.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (typed[i - 1] === name[j - 1] ? 0 : 1))
      row = next
    }
    const d = row[name.length]!
    if (d <= 2 && (best === undefined || d < best.d)) best = { name, d }
  }
  return best?.name
}

/** true/1/yes/on → true, false/0/no/off/"" → false, anything else undefined (a typo is an error, not "off"). */
function booleanWord(v: string): boolean | undefined {
  const w = v.trim().toLowerCase()
  if (w === 'true' || w === '1' || w === 'yes' || w === 'on') return true
  if (w === 'false' || w === '0' || w === 'no' || w === 'off' || w === '') return false
  return undefined
}

function normalizeListen(v: string): string {
  return /^\d+$/.test(v) ? `:${v}` : v
}

/** The config document from --config and/or flags, validated. Throws ConfigError. */
export function buildProxyConfig(flags: Flags, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  let raw: Record<string, unknown>
  let source = 'flags'
  checkUpstreamFlag(flags)
  if (flags.config !== undefined) {
    source = flags.config
    let text: string
    try {
      text = readFileSync(flags.config, 'utf8')
    } catch (err) {
      throw new ConfigError(flags.config, [`cannot read file: ${(err as Error).message}`])
    }
    const parsed = parseConfigText(text, flags.config, env)
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(flags.config, ['(root): expected a mapping of settings'])
    raw = parsed as Record<string, unknown>
    if (flags.upstream !== undefined) {
      // The file's problem with the flag: named by the file, as `config validate a.yaml b.yaml`
      // otherwise printed "--upstream: … mode: ingress" without saying which file is ingress.
      if (raw.mode === 'ingress') throw new ConfigError(flags.config, [`mode: "ingress", and --upstream only applies to sidecar mode (set by --upstream / ${FLAGS.upstream.env})`])
      const routes = Array.isArray(raw.routes) ? (raw.routes as Record<string, unknown>[]) : []
      raw.routes = routes.length ? routes.map((r) => ({ ...r, upstream: flags.upstream })) : [{ name: 'default', upstream: flags.upstream }]
    }
  } else if (flags.upstream !== undefined) {
    raw = { mode: 'sidecar', routes: [{ name: 'default', upstream: flags.upstream }] }
  } else {
    throw new ConfigError('igw proxy', ['needs --config <file> or --upstream <url> (or IGW_CONFIG / IGW_UPSTREAM)'])
  }
  return validateWithOverrides(raw, flags, source)
}

/**
 * --upstream (or IGW_UPSTREAM) must be an origin URL; throws ConfigError naming both, as the
 * overriding flags' problems do: a value from the environment was blamed on a flag never typed.
 */
function checkUpstreamFlag(flags: Flags): void {
  if (flags.upstream === undefined) return
  const u = originUrl.safeParse(flags.upstream, { reportInput: true })
  if (!u.success) throw new ConfigError('--upstream', formatIssues(u.error.issues).map((l) => `${l.replace(/^\(root\): /, '')} (set by --upstream / ${FLAGS.upstream.env})`))
}

/** The config path each overriding flag sets (see applyFlagOverrides), with its environment twin. */
const OVERRIDE_PATHS: [flag: 'listen' | 'admin-listen' | 'workers' | 'redis' | 'log-level', path: string][] = [
  ['listen', 'listen'],
  ['admin-listen', 'admin.listen'],
  ['workers', 'workers'],
  ['redis', 'redis.url'],
  ['log-level', 'log.level'],
]

/**
 * Validate a document with the flag overrides applied. A bad flag value (`--workers 0`,
 * IGW_LISTEN=:99999) was reported as the document's — "igw.yaml: invalid config / workers: …" sent
 * the operator to a file that says `workers: 4`, and a control plane's NACK blamed a version that
 * was fine — so a problem at a path a flag set names the flag.
 */
function validateWithOverrides(raw: Record<string, unknown>, flags: Flags, source: string): GatewayConfig {
  try {
    return validateConfig(applyFlagOverrides(raw, flags), source)
  } catch (err) {
    // Flags alone (`--upstream … --workers 0`, or IGW_WORKERS=0 baked into an image) name the flag
    // too: "flags: … workers: …" named neither the flag nor its environment variable.
    if (!(err instanceof ConfigError)) throw err
    let named = false
    const problems = err.problems.map((line) => {
      for (const [flag, path] of OVERRIDE_PATHS) {
        if (flags[flag] === undefined || !line.startsWith(path) || !/^[:.[]/.test(line.slice(path.length))) continue
        named = true
        return `${line} (set by --${flag} / ${FLAGS[flag].env})`
      }
      return line
    })
    if (!named) throw err
    throw new ConfigError(source, problems)
  }
}

/** Flags that win over the document: addresses, workers, Redis, log level. */
export function applyFlagOverrides(raw: Record<string, unknown>, flags: Flags): Record<string, unknown> {
  if (flags.listen !== undefined) raw.listen = normalizeListen(flags.listen)
  if (flags['admin-listen'] !== undefined) raw.admin = { ...(raw.admin as object | undefined), listen: normalizeListen(flags['admin-listen']) }
  // Only numerals become numbers: Number("abc") is NaN and Number("") is 0, which the error
  // would then quote as `got null` / `got 0` instead of what the operator typed.
  if (flags.workers !== undefined) raw.workers = /^[+-]?\d+(\.\d+)?$/.test(flags.workers.trim()) ? Number(flags.workers) : flags.workers
  if (flags.redis !== undefined) raw.redis = { ...(raw.redis as object | undefined), url: flags.redis }
  if (flags['log-level'] !== undefined) raw.log = { ...(raw.log as object | undefined), level: flags['log-level'] }
  return raw
}

async function runProxy(flags: Flags): Promise<void> {
  const { startProxy } = await import('./supervisor.ts')
  if (flags['control-plane'] !== undefined) {
    await runProxyWithControlPlane(flags)
    return
  }
  const config = buildProxyConfig(flags)
  const handle = await startProxy({
    config,
    loadConfig: flags.config !== undefined ? () => buildProxyConfig(flags) : undefined,
    watchPath: flags.config,
  })
  // Without --config there is no file: a SIGHUP is noted in the log (handle.reload answered it
  // with a silent "no config file to reload", so the operator saw nothing happen).
  installSignals(handle.logger, handle.close, flags.config !== undefined ? handle.reload : undefined)
}

/** A config document from the control plane, with this proxy's flag overrides, validated. */
export function configFromDocument(document: unknown, flags: Flags, source: string): GatewayConfig {
  if (document === null || typeof document !== 'object' || Array.isArray(document)) throw new ConfigError(source, ['(root): expected a mapping of settings'])
  return validateWithOverrides({ ...(document as Record<string, unknown>) }, flags, source)
}

/**
 * The control plane token: --control-plane-token as given, or a function reading
 * --control-plane-token-file for every request (a Kubernetes Secret volume or projected token is
 * replaced in place when rotated). A file that cannot be read later keeps the last token, with a
 * warning per distinct problem. Throws ConfigError naming the flag.
 */
function controlPlaneToken(flags: Flags, log: { warn(o: object, msg: string): void }): string | (() => string) {
  const file = flags['control-plane-token-file']
  if (file !== undefined && flags['control-plane-token'] !== undefined) throw new ConfigError('--control-plane', ['give either --control-plane-token or --control-plane-token-file, not both'])
  if (file === undefined) {
    const given = flags['control-plane-token']
    if (given === undefined) throw new ConfigError('--control-plane', ['needs --control-plane-token or --control-plane-token-file (or IGW_CONTROL_PLANE_TOKEN / IGW_CONTROL_PLANE_TOKEN_FILE): a JWT with the proxy role'])
    // Trimmed as the file is: a Secret made with `kubectl create secret --from-file` ends in a
    // newline, which undici refuses in a header ("invalid authorization header") on every attempt,
    // logged as "control plane unreachable" while the control plane was fine.
    const t = given.trim()
    const problem = tokenProblem(t)
    if (problem !== undefined) throw new ConfigError('--control-plane-token', [`${problem} (from --control-plane-token / IGW_CONTROL_PLANE_TOKEN)`])
    return t
  }
  const read = (): string => {
    const t = readFileSync(file, 'utf8').trim()
    if (t === '') throw new Error('the file is empty')
    const problem = tokenProblem(t)
    if (problem !== undefined) throw new Error(problem)
    return t
  }
  let last: string
  try {
    last = read()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new ConfigError('--control-plane-token-file', [e.code ? `cannot read ${file}: ${e.message}` : `${file}: ${e.message}`])
  }
  let problem: string | undefined
  return () => {
    try {
      last = read()
      problem = undefined
    } catch (err) {
      const msg = (err as Error).message
      if (msg !== problem) log.warn({ file, error: msg }, 'cannot read the control plane token file; using the last token read')
      problem = msg
    }
    return last
  }
}

/**
 * IGW_USAGE_INTERVAL_MS: whole milliseconds, 100 ms to 24 h. Number() took anything: "5s" became
 * the default unsaid, and 0.5, -1 or a huge value meant to turn reports down (3600000000) became
 * Node's 1 ms timer — a usage collection from every worker each millisecond. Throws ConfigError.
 */
export function usageInterval(text: string | undefined): number {
  if (text === undefined || text.trim() === '') return 5_000
  const ms = /^\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN
  if (!(ms >= 100 && ms <= 86_400_000)) throw new ConfigError('IGW_USAGE_INTERVAL_MS', [`expected whole milliseconds from 100 to 86400000 (24 h), got ${JSON.stringify(text.slice(0, 40))}`])
  return ms
}

/** What makes a (trimmed) token unusable in an Authorization header; undefined when it is fine. */
function tokenProblem(t: string): string | undefined {
  if (t === '') return 'the token is empty'
  // A JWT is printable ASCII without spaces; a line break or a space inside (two tokens pasted,
  // a PEM) never authenticates, and undici refuses control characters before sending anything.
  const bad = /[^\x21-\x7e]/.exec(t)
  if (bad !== null) return `the token holds ${bad[0] === ' ' ? 'a space' : `the character U+${bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`} at position ${bad.index}: expected one JWT on one line`
  return undefined
}

/**
 * --control-plane must be an http(s) URL. `cp:7070` or `127.0.0.1:7070` (no scheme) parse as URLs
 * of another scheme and were only ever "unreachable": with a last-known-good snapshot on disk the
 * proxy started from it and retried the typo forever, taking no change. Throws ConfigError.
 */
export function controlPlaneUrl(text: string): URL {
  let url: URL | undefined
  try {
    url = new URL(text)
  } catch {}
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    const shown = /@/.test(text) ? `a value of ${text.length} characters (not shown: it may hold credentials)` : `"${text}"`
    throw new ConfigError('--control-plane', [`expected an http:// or https:// URL, e.g. http://127.0.0.1:7070, got ${shown}`])
  }
  return url
}

async function runProxyWithControlPlane(flags: Flags): Promise<void> {
  const { startProxy } = await import('./supervisor.ts')
  const { startProxyFromControlPlane } = await import('./control-plane-client.ts')
  const { pino } = await import('pino')
  // Synchronous writes: pino's default (async) stdout stream flushes at exit with a loop that
  // retries EPIPE forever, so with its reader gone (`| head`, a dead log shipper) the process
  // hung at exit in Atomics.wait, deaf to SIGTERM. Sync writes see EPIPE at once and go quiet.
  const log = createLogger('info', pino.destination({ dest: 1, sync: true }), { component: 'control-plane-client' })
  controlPlaneUrl(flags['control-plane']!)
  const token = controlPlaneToken(flags, log)
  let publicKeyPem: string | undefined
  if (flags['control-plane-key'] !== undefined) {
    try {
      publicKeyPem = readFileSync(flags['control-plane-key'], 'utf8')
    } catch (err) {
      throw new ConfigError('--control-plane-key', [`cannot read file: ${(err as Error).message}`])
    }
    // An empty file (a Secret not mounted yet, a bad template) is no key: taken as "no flag", the
    // proxy pinned whatever key answered first — the trust the flag was given to avoid.
    if (publicKeyPem.trim() === '') throw new ConfigError('--control-plane-key', [`${flags['control-plane-key']}: the file is empty, not a PEM public key`])
  }
  const previousKeyPems: string[] = []
  for (const file of (flags['control-plane-previous-keys'] ?? '').split(',').map((f) => f.trim()).filter(Boolean)) {
    try {
      previousKeyPems.push(readFileSync(file, 'utf8'))
    } catch (err) {
      throw new ConfigError('--control-plane-previous-keys', [`${file}: cannot read file: ${(err as Error).message}`])
    }
  }
  const fallback = flags.config !== undefined || flags.upstream !== undefined ? () => buildProxyConfig(flags) : undefined
  let handle: Awaited<ReturnType<typeof startProxy>> | undefined
  let cpClient: { close(): Promise<void>; flushUsage(): Promise<void> } | undefined
  const shutdown = async () => {
    await cpClient?.close() // no more pushes; reports what was counted so far
    await handle!.close()
    // The requests that finished during the drain: one last report, bounded (the pod's grace
    // period is spent on the drain already).
    if (cpClient !== undefined) await Promise.race([cpClient.flushUsage().catch(() => undefined), new Promise((r) => setTimeout(r, 2_000).unref())])
  }
  const { client } = await startProxyFromControlPlane(
    {
      url: flags['control-plane']!,
      token,
      stateDir: flags['state-dir'] ?? '.igw-state',
      ...(publicKeyPem ? { publicKeyPem } : {}),
      previousKeyPems,
      ...(flags['proxy-id'] !== undefined ? { proxyId: flags['proxy-id'] } : {}),
      toConfig: (doc, source) => configFromDocument(doc, flags, source),
      usageIntervalMs: usageInterval(process.env.IGW_USAGE_INTERVAL_MS),
      log: (level, obj, msg) => log[level](obj, msg),
    },
    fallback,
    async (config, version, source) => {
      // The fallback runs as version 1 (0 means "none" in the supervisor's worker sync): `source`
      // is what tells it from the control plane's version 1 (/readyz, /config; the gauge shows 0).
      handle = await startProxy({ config, version: version > 0 ? version : 1, source })
      // Serving from here: a SIGTERM drains. Installed once the boot was ACKed, the early handler
      // still exited at once while the ACK was in flight (a slow control plane), cutting requests.
      installSignals(handle.logger, shutdown)
      return handle
    },
  )
  cpClient = client
}

/**
 * Signals that arrive before a long-running command is up. SIGHUP's default action kills the
 * process, so a reload signal sent early (a config reloader reacting to the same change that
 * started the pod) must be caught from the first moment; it is replayed once the proxy runs.
 * SIGTERM/SIGINT during startup exit 0 at once: nothing is in flight yet.
 */
const early = { installed: false, hup: false, handlers: [] as [NodeJS.Signals, () => void][] }

export function catchEarlySignals(): void {
  if (early.installed) return
  early.installed = true
  const on = (signal: NodeJS.Signals, fn: () => void) => {
    early.handlers.push([signal, fn])
    process.on(signal, fn)
  }
  on('SIGHUP', () => {
    early.hup = true
  })
  // bin/igw.js caught the ones that came while the sources loaded
  const fromBin = (globalThis as Record<symbol, { hup: boolean; onHup: () => void; onStop?: (signal: NodeJS.Signals) => void } | undefined>)[Symbol.for('igw.earlySignals')]
  const stop = (signal: string) => () => {
    console.error(JSON.stringify({ level: 'info', time: new Date().toISOString(), pid: process.pid, signal, msg: 'shutting down during startup' }))
    process.exit(0)
  }
  on('SIGTERM', stop('SIGTERM'))
  on('SIGINT', stop('SIGINT'))
  // Ours are on before bin's come off: a signal's last listener going closes Node's signal
  // handle, and a signal that arrived while the sources loaded (not yet dispatched: loading
  // does not turn the event loop) would be dropped with it.
  if (fromBin !== undefined) {
    early.hup ||= fromBin.hup
    process.off('SIGHUP', fromBin.onHup)
    if (fromBin.onStop !== undefined) {
      process.off('SIGTERM', fromBin.onStop)
      process.off('SIGINT', fromBin.onStop)
    }
  }
}

/** SIGTERM/SIGINT drain then exit 0; a second signal exits at once. SIGHUP reloads (or is logged). */
export function installSignals(logger: { info(o: object, m: string): void }, close: () => Promise<void>, reload?: () => Promise<unknown>): void {
  // The early handlers come off only after these are on (below): a signal's last listener going
  // closes Node's signal handle and drops a signal already received but not yet dispatched.
  const earlyHandlers = early.handlers.splice(0)
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) process.exit(1)
    stopping = true
    logger.info({ signal }, 'shutting down')
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  // Never SIGHUP's default action (exit): without a file to reload it is only noted.
  if (reload) process.on('SIGHUP', () => void reload())
  else {
    // A reloader looping on SIGHUP (a file watcher on a ConfigMap that changes every second)
    // wrote a line per signal: one a minute, with the count of those ignored since.
    const hupLog = new LogWindow(60_000)
    process.on('SIGHUP', () => {
      const held = hupLog.take()
      if (held !== undefined) logger.info({ signal: 'SIGHUP', ...(held > 0 ? { ignoredSinceLastLine: held } : {}) }, 'nothing to reload here (config comes from the control plane or flags); ignored')
    })
  }
  for (const [signal, fn] of earlyHandlers) process.off(signal, fn)
  // A SIGHUP the early handler noted (read after it is off: none can land in between).
  const pendingHup = early.hup
  early.hup = false
  if (pendingHup && reload) void reload()
}

export async function main(argv: string[]): Promise<void> {
  let parsed
  try {
    parsed = parseFlags(argv)
  } catch (err) {
    // A mistyped flag (`igw proxy --uptream URL`) got the whole table of every command's flags,
    // with no hint: the command's own flags instead, and the nearest one by name.
    const key = commandKey(argv.slice(0, 2).filter((a) => !a.startsWith('-')))
    const message = (err as Error).message
    const unknown = /^unknown flag (--[^ =]+)$/.exec(message)?.[1]
    const near = unknown !== undefined ? nearestFlag(unknown, key !== undefined ? COMMAND_FLAGS[key]! : (Object.keys(FLAGS) as FlagName[])) : undefined
    console.error(`igw: ${message}${near !== undefined ? ` (did you mean --${near}?)` : ''}\n\n${(key !== undefined ? commandUsage(key) : undefined) ?? USAGE}`)
    process.exit(2)
  }
  const { flags, positionals, given } = parsed
  const [command, sub, arg] = positionals
  // One-shot commands piped into a reader that stops early (`igw config schema | head`): a closed
  // stdout ends the command quietly, as for any Unix filter, not with an unhandled EPIPE stack.
  // Servers keep serving (their logs have their own streams).
  if (command !== 'proxy' && command !== 'demo' && command !== 'control-plane') {
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0)
      throw err
    })
  }
  if (flags.version || (command === 'version' && positionals.length === 1)) {
    console.log(`igw ${igwVersion()}`)
    return
  }
  if (command === 'help' || flags.help || command === undefined) {
    // `igw help proxy`, `igw proxy --help`: that command's flags; `igw help`, `igw help config`
    // (a word with several commands under it) the whole list
    const topic = command === 'help' ? positionals.slice(1) : positionals
    const key = commandKey(topic, true)
    // A topic naming no command (`igw help nosuch`, `igw confg validate --help`) printed the whole
    // list and exit 0, as if that help existed: a usage error, as the command itself would be.
    const listed = topic.length === 0 || (topic.length === 1 && (topic[0] === 'help' || topic[0] === 'version' || COMMANDS.some(([c]) => c.split(' ')[0] === topic[0])))
    if (key === undefined && !listed) {
      console.error(`igw: no help for "${topic.join(' ')}": no such command\n\n${USAGE}`)
      process.exit(2)
    }
    console.log((key !== undefined ? commandUsage(key) : undefined) ?? USAGE)
    return
  }
  const key = commandKey(positionals)
  const inapplicable = key === undefined ? [] : given.filter((name) => name !== 'help' && name !== 'version' && !COMMAND_FLAGS[key]!.includes(name))
  if (inapplicable.length > 0) {
    const allowed = COMMAND_FLAGS[key!]!.map((n) => `--${n}`).join(', ')
    console.error(`igw ${key}: ${inapplicable.map((n) => `--${n}`).join(', ')} ${inapplicable.length === 1 ? 'does' : 'do'} not apply to this command (${allowed || 'it takes no flags'}); see igw help ${key}`)
    process.exit(2)
  }
  // Only `config validate` takes operands. `igw proxy igw.yaml` (a forgotten --config) or a stray
  // word after a flag's value was ignored, and the proxy started without what was meant; `igw audit
  // verify other.db` (a forgotten --db) verified the default database and `igw policy test
  // policies/dlp` ran every policy's tests, each reported as a pass for what was named.
  // (`config schema <file>` has its own usage line below.)
  const words = key !== undefined ? key.split(' ').length : command === 'version' ? 1 : undefined
  if (words !== undefined && key !== 'config validate' && key !== 'config schema' && positionals.length > words) {
    const extra = positionals.slice(words)
    console.error(`igw: ${key ?? command} takes no arguments, got ${extra.map((p) => JSON.stringify(p)).join(' ')}${command === 'proxy' && extra.length === 1 ? ` (did you mean --config ${extra[0]}?)` : ''}\n\n${(key !== undefined ? commandUsage(key) : undefined) ?? USAGE}`)
    process.exit(2)
  }
  if (command === 'proxy' || command === 'demo' || command === 'control-plane') catchEarlySignals()
  try {
    switch (command) {
      case 'proxy':
        await runProxy(flags)
        return
      case 'demo': {
        const { runDemo } = await import('./demo.ts')
        await runDemo(flags)
        return
      }
      case 'control-plane': {
        const { runControlPlane } = await import('../control-plane/cli.ts')
        const cp = await runControlPlane(flags)
        installSignals(cp.logger, () => cp.close())
        return
      }
      case 'audit': {
        if (sub !== 'verify') {
          console.error('usage: igw audit verify [--db sqlite:./data/igw.db|postgres://…] [--signing-key F] [--previous-keys F1,F2]')
          process.exit(2)
        }
        const { runAuditVerify } = await import('../control-plane/cli.ts')
        if (!(await runAuditVerify(flags))) process.exit(1)
        return
      }
      case 'config':
        if (sub === 'validate' && arg !== undefined) {
          // Every file named is checked (a shell glob names several): only the first was, and
          // "valid" for it read as a pass for the lot. Each gets its line; any invalid one fails.
          // A bad --upstream is the flag's problem, not each file's: said once, not once per file.
          checkUpstreamFlag(flags)
          let invalid = false
          for (const file of positionals.slice(2)) {
            try {
              buildProxyConfig({ ...flags, config: file })
              console.log(`${file}: valid`)
            } catch (err) {
              if (!(err instanceof ConfigError)) throw err
              console.error(err.message)
              invalid = true
            }
          }
          if (invalid) process.exit(EXIT_CONFIG)
          return
        }
        // `schema` takes no file: a stray argument (`igw config schema igw.yaml`, meaning validate)
        // printed the schema and exited 0, as if the file had been checked.
        if (sub === 'schema' && arg === undefined) {
          const { renderConfigJsonSchema } = await import('../config/generate-schema.ts')
          process.stdout.write(renderConfigJsonSchema())
          return
        }
        console.error('usage: igw config validate <file>… | igw config schema')
        process.exit(2)
        return
      case 'policy': {
        const { buildPolicies, testPolicies, opaBinary, checkOpaVersion, OPA_VERSION, PolicyBuildError } = await import('../policies/toolchain.ts')
        if (sub === 'build' || sub === 'test') {
          // No opa CLI (or IGW_OPA naming none): `policy test` exited 1 saying nothing, and
          // `policy build` with a stack trace. One line naming the binary and how to install it.
          const install = `install it with \`go install github.com/open-policy-agent/opa@v${OPA_VERSION}\` (or set IGW_OPA to its path)`
          let bin: string
          try {
            bin = opaBinary()
          } catch {
            console.error(`igw policy ${sub}: the opa CLI is not installed (not on PATH, not in ~/go/bin); ${install}`)
            process.exit(EXIT_UNAVAILABLE)
          }
          const probe = spawnSync(bin, ['version'], { encoding: 'utf8' })
          if (probe.error !== undefined || probe.status !== 0) {
            const why = probe.error?.message ?? `\`${bin} version\` exited ${probe.status ?? probe.signal}`
            console.error(`igw policy ${sub}: cannot run the opa CLI ${bin}${process.env.IGW_OPA ? ' (IGW_OPA)' : ''}: ${why}; ${install}`)
            process.exit(EXIT_UNAVAILABLE)
          }
        }
        if (sub === 'build') {
          let results: { name: string; changed: boolean }[]
          try {
            results = buildPolicies(flags.check === true)
          } catch (err) {
            // A Rego error (opa's file:line lines) or an opa that cannot build: its message, not a stack.
            if (!(err instanceof PolicyBuildError)) throw err
            console.error(`igw policy build: ${err.message}`)
            process.exit(1)
          }
          // Bundles built by another opa differ byte for byte without being stale: say which.
          const version = results.some((r) => r.changed) && flags.check ? checkOpaVersion() : OPA_VERSION
          const stale = version === OPA_VERSION ? 'STALE (run `igw policy build` and commit)' : `STALE (or built by another opa: this is ${version}, the bundles are built with ${OPA_VERSION})`
          for (const r of results) console.log(`${r.name}: ${r.changed ? (flags.check ? stale : 'rebuilt') : 'up to date'}`)
          if (flags.check && results.some((r) => r.changed)) process.exit(1)
          return
        }
        if (sub === 'test') {
          const r = testPolicies(true)
          process.stdout.write(r.out)
          if (!r.ok) process.exit(1)
          return
        }
        console.error('usage: igw policy build [--check] | igw policy test')
        process.exit(2)
        return
      }
      default:
        console.error(`igw: unknown command "${command}"\n\n${USAGE}`)
        process.exit(2)
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(EXIT_CONFIG)
    }
    // The environment refused something (a port taken, an address not on this host): one line
    // naming it, an exit code scripts can tell apart, no stack trace.
    const exitCode = startupExitCode(err)
    if (exitCode !== undefined) {
      console.error(`igw: ${(err as Error).message}`)
      process.exit(exitCode)
    }
    throw err
  }
}

const LISTEN_CODES = new Set(['EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES'])

function startupExitCode(err: unknown): number | undefined {
  if (!(err instanceof Error)) return undefined
  // proxy/supervisor.ts's StartupError, recognized by name: importing it would load the
  // supervisor (workers, prom-client) for every command
  if (err.name === 'StartupError') return (err as { kind?: string }).kind === 'listen' ? EXIT_LISTEN : 1
  // control plane and demo listeners: a plain listen error from node:net
  const e = err as NodeJS.ErrnoException
  if (e.syscall === 'listen' && e.code !== undefined && LISTEN_CODES.has(e.code)) return EXIT_LISTEN
  return undefined
}

