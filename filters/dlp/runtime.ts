// What every dlp filter instance of a worker thread shares: the compiled rule pack, the
// tokenizer over the current keyring (re-read when the keyring file changes, so a promoted key
// takes effect without a reload) and the loaded export policy. Built once per worker and config.
import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { loadPolicyBundle, type PolicyEvaluator } from '../../policies/engine.ts'
import { bundlePath } from '../../policies/catalog.ts'
import type { DlpConfig } from '../../config/dlp.ts'
import { LogWindow } from '../../proxy/filter.ts'
import { KeyringError, LocalKeyring, type KeyProvider, type KeyringSnapshot } from './keyring.ts'
import { BUILTIN_RULE_PACK, RulePack } from './rule-pack.ts'
import { Tokenizer } from './tokenizer.ts'
import { setDefaultPhoneRegion } from './validators.ts'
import { fileStamp } from '../../config/file-stamp.ts'
import { LRUCache } from 'lru-cache'

const KEYRING_CHECK_MS = 2_000
/** At most one "reload failed" line per worker and keyring in this window; every failure is counted. */
export const KEYRING_FAILURE_LOG_MS = 60_000

/** Where a keyring's troubles go: the filter's logger and its metric (set once the filter exists). */
export interface KeyringSink {
  readonly logger: Logger
  /** igw_dlp_keyring_reload_failures_total */
  readonly failures: { inc(): void }
}

/** The tokenizer of one keyring, swapped when the keyring changes on disk. */
export class KeyringState {
  readonly provider: KeyProvider
  tokenizer: Tokenizer
  #version: string
  #checkedAt = performance.now()
  #checking = false
  #sink: KeyringSink | undefined = undefined
  /** What the last failed reload was (version and message): a retry of it is no new failure. */
  #failure: string | undefined = undefined
  readonly #failureLog = new LogWindow(KEYRING_FAILURE_LOG_MS)
  /** "path\0mode" already warned about: once per file and mode, not per reload. */
  readonly #warned = new Set<string>()

  /** The keys in use: a reload may add and retire keys, never give a known id another secret. */
  #ring: KeyringSnapshot

  constructor(provider: KeyProvider, ring: KeyringSnapshot, version: string) {
    this.provider = provider
    this.#ring = ring
    this.tokenizer = new Tokenizer(ring)
    this.#version = version
  }

  static async open(provider: KeyProvider): Promise<KeyringState> {
    // The version is read before the keys, as #refresh does: read after them, a rotation landing
    // in between (promoteKey renaming the new file into place) was recorded as already loaded,
    // and the old active key stayed in use until the keyring changed again. Read first, such a
    // change only costs one more reload at the next check. A file load() creates has no version
    // before it.
    let before: string | undefined
    try {
      before = await provider.version()
    } catch {
      before = undefined
    }
    const ring = await provider.load()
    return new KeyringState(provider, ring, before ?? (await provider.version()))
  }

  /**
   * Route failures and warnings to this logger and counter. Every dlp filter of the worker calls
   * it (one per route, again on a config reload): the latest wins, the failure state stays.
   */
  attach(sink: KeyringSink): void {
    this.#sink = sink
    this.#checkExposure() // the first load ran before any filter existed
  }

  /** At most every 2 s, in the background: reload when the keyring's version changed. */
  maybeRefresh(now: number): void {
    if (this.#checking || now - this.#checkedAt < KEYRING_CHECK_MS) return
    this.#checkedAt = now
    this.#checking = true
    void this.#refresh().finally(() => {
      this.#checking = false
    })
  }

  async #refresh(): Promise<void> {
    let v: string | undefined
    try {
      v = await this.provider.version()
      if (v !== this.#version) {
        const ring = await this.provider.load()
        // Tokens name their key id: a known id with another secret (a keyring recreated by
        // `create: true` after the file was lost, a hand edit) made every token issued under it
        // irreversible, and new tokens of the same value differ from the old ones.
        for (const [id, key] of ring.keys) {
          const was = this.#ring.keys.get(id)
          if (was !== undefined && (was.secret.length !== key.secret.length || !timingSafeEqual(was.secret, key.secret))) {
            throw new KeyringError(`key "${id}" has another secret than the one in use: tokens issued under it could no longer be reversed (give a new key a new id)`)
          }
        }
        this.#ring = ring
        this.tokenizer = new Tokenizer(ring)
        this.#version = v
        this.#checkExposure()
      }
    } catch (err) {
      // Keep the last good keyring; a half-written or removed file must not stop exports.
      this.#failed(err as Error, v)
      return
    }
    // Back to a keyring that loads (or to the very file last loaded): the next failure counts.
    if (this.#failure !== undefined) {
      this.#failure = undefined
      this.#failureLog.reset()
      this.#sink?.logger.info({ keyring: this.provider.description }, 'DLP keyring reloaded after failures')
    }
  }

  /**
   * The file stays broken until someone fixes it, and every check (2 s) retries it: the same
   * version failing the same way is one failure, counted and logged once. A different one (the
   * writer moved on, another error) counts again; its line waits out the log window.
   */
  #failed(err: Error, version: string | undefined): void {
    const what = `${version ?? 'unversioned'}\u0000${err.message}`
    if (what === this.#failure) return
    this.#failure = what
    const sink = this.#sink
    if (sink === undefined) return
    sink.failures.inc()
    const suppressed = this.#failureLog.take()
    if (suppressed === undefined) return
    sink.logger.error({ err: { message: err.message }, keyring: this.provider.description, ...(suppressed > 0 ? { suppressed } : {}) }, 'DLP keyring reload failed; keeping the last good keyring')
  }

  /** A keyring file others can read holds the secrets in the clear: say so, once per file and mode. */
  #checkExposure(): void {
    const sink = this.#sink
    const e = this.provider.exposure?.()
    if (sink === undefined || e === undefined) return
    const key = `${e.path}\u0000${e.mode}`
    if (this.#warned.has(key)) return
    this.#warned.add(key)
    sink.logger.warn({ keyring: e.path, mode: e.mode }, `DLP keyring ${e.path} has mode ${e.mode}: users other than its owner (and its group) may read or change the keys; make it 0600 (or 0400)`)
  }
}

// Rule packs and policy bundles are files an operator rebuilds in place: each is cached with the
// file's identity (inode, size, mtime), so a config reload after a rebuild loads the new one
// (it was kept for the life of the process: a rebuilt `./export.tar.gz` took a restart).
// Keyed by what the config names (a path, the gateway's data for the policy), never by anything
// a request carries; still, every config version that names another bundle or pack (versioned
// file names, `allowedPresets` edited) added an entry that was never dropped, each loaded policy
// holding its own wasm instance (~180 KB): a long-lived proxy fed config pushes grew without end.
// The few most recent stay (a config flipping between two bundles reloads neither); a filter
// built from an evicted entry keeps its own reference.
export const DLP_SHARED_CACHE_MAX = 8
// An export policy evaluation over `dlp.policy.budgetMs` (default 250) fails: the export is
// denied, logged and counted in igw_dlp_policy_failures_total{cause="runaway"}. The wasm cannot be
// stopped midway, so the budget does not give the worker its time back; the memory cap
// (policies/engine.ts) is what ends a runaway comprehension early. The shipped policy takes
// microseconds.
const packs = new LRUCache<string, { stamp: string; pack: RulePack }>({ max: DLP_SHARED_CACHE_MAX })
const keyrings = new Map<string, Promise<KeyringState>>()
const policies = new LRUCache<string, { stamp: string; policy: Promise<PolicyEvaluator> }>({ max: DLP_SHARED_CACHE_MAX })

/** How many rule packs and policies this worker keeps loaded for reuse (diagnostics, tests). */
export function dlpSharedCacheSizes(): { packs: number; policies: number } {
  return { packs: packs.size, policies: policies.size }
}

export interface DlpShared {
  pack: RulePack
  keyring: KeyringState
  policy: PolicyEvaluator | undefined
}

export async function dlpShared(cfg: DlpConfig): Promise<DlpShared> {
  setDefaultPhoneRegion(cfg.phoneRegion)
  const packPath = cfg.rulePack ?? BUILTIN_RULE_PACK
  const packStamp = fileStamp(packPath)
  let packEntry = packs.get(packPath)
  if (packEntry === undefined || packEntry.stamp !== packStamp) {
    packEntry = { stamp: packStamp, pack: RulePack.load(packPath) }
    packs.set(packPath, packEntry)
  }
  const pack = packEntry.pack
  const ringKey = `${cfg.keyring.provider}:${cfg.keyring.file}:${cfg.keyring.create}`
  let ring = keyrings.get(ringKey)
  if (ring === undefined) {
    ring = KeyringState.open(new LocalKeyring(cfg.keyring.file, { create: cfg.keyring.create }))
    keyrings.set(ringKey, ring)
    ring.catch(() => keyrings.delete(ringKey))
  }
  let policy: Promise<PolicyEvaluator> | undefined
  if (cfg.policy.enabled) {
    const data = { igw: { dlp: { allowed_presets: cfg.policy.allowedPresets } } }
    const key = `${cfg.policy.bundle}\u0000${cfg.policy.entrypoint}\u0000${cfg.policy.budgetMs}\u0000${JSON.stringify(data)}`
    const stamp = fileStamp(cfg.policy.bundle.endsWith('.tar.gz') ? cfg.policy.bundle : bundlePath(cfg.policy.bundle))
    const cached = policies.get(key)
    if (cached !== undefined && cached.stamp === stamp) policy = cached.policy
    else {
      // A bundle without the configured entrypoint (a typo, the admin bundle named by mistake)
      // is refused with the config, not found out by denying every export at run time.
      // So is one calling a builtin the wasm runtime lacks (http.send…): it loaded and then failed
      // every export that reached the call.
      const loading = loadPolicyBundle(cfg.policy.bundle, data, { entrypoints: [cfg.policy.entrypoint], checkBuiltins: true, budgetMs: cfg.policy.budgetMs })
      const entry = { stamp, policy: loading }
      policies.set(key, entry)
      loading.catch(() => {
        if (policies.peek(key) === entry) policies.delete(key)
      })
      policy = loading
    }
  }
  return { pack, keyring: await ring, policy: policy === undefined ? undefined : await policy }
}
