// What every dlp filter instance of a worker thread shares: the compiled rule pack, the
// tokenizer over the current keyring (re-read when the keyring file changes, so a promoted key
// takes effect without a reload) and the loaded export policy. Built once per worker and config.
import { loadPolicyBundle, type PolicyEvaluator } from '../../policies/engine.ts'
import type { DlpConfig } from '../../config/dlp.ts'
import { LocalKeyring, type KeyProvider } from './keyring.ts'
import { BUILTIN_RULE_PACK, RulePack } from './rule-pack.ts'
import { Tokenizer } from './tokenizer.ts'
import { setDefaultPhoneRegion } from './validators.ts'

const KEYRING_CHECK_MS = 2_000

/** The tokenizer of one keyring, swapped when the keyring changes on disk. */
export class KeyringState {
  readonly provider: KeyProvider
  tokenizer: Tokenizer
  #version: string
  #checkedAt = performance.now()
  #checking = false
  onError: ((err: unknown) => void) | undefined = undefined

  constructor(provider: KeyProvider, tokenizer: Tokenizer, version: string) {
    this.provider = provider
    this.tokenizer = tokenizer
    this.#version = version
  }

  static async open(provider: KeyProvider): Promise<KeyringState> {
    const ring = await provider.load()
    return new KeyringState(provider, new Tokenizer(ring), await provider.version())
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
    try {
      const v = await this.provider.version()
      if (v === this.#version) return
      const ring = await this.provider.load()
      this.tokenizer = new Tokenizer(ring)
      this.#version = v
    } catch (err) {
      // Keep the last good keyring; a half-written or removed file must not stop exports.
      this.onError?.(err)
    }
  }
}

const packs = new Map<string, RulePack>()
const keyrings = new Map<string, Promise<KeyringState>>()
const policies = new Map<string, Promise<PolicyEvaluator>>()

export interface DlpShared {
  pack: RulePack
  keyring: KeyringState
  policy: PolicyEvaluator | undefined
}

export async function dlpShared(cfg: DlpConfig): Promise<DlpShared> {
  setDefaultPhoneRegion(cfg.phoneRegion)
  const packPath = cfg.rulePack ?? BUILTIN_RULE_PACK
  let pack = packs.get(packPath)
  if (pack === undefined) {
    pack = RulePack.load(packPath)
    packs.set(packPath, pack)
  }
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
    const key = `${cfg.policy.bundle}\u0000${JSON.stringify(data)}`
    policy = policies.get(key)
    if (policy === undefined) {
      policy = loadPolicyBundle(cfg.policy.bundle, data)
      policies.set(key, policy)
      policy.catch(() => policies.delete(key))
    }
  }
  return { pack, keyring: await ring, policy: policy === undefined ? undefined : await policy }
}
