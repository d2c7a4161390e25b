// POST /v1/dlp/detokenize reaches the DLP filter's tokenizer through this seam. The control plane
// does not import filters statically (rooms); it loads filters/dlp/tokenizer.ts and keyring.ts at
// start when they exist, and answers 501 otherwise. The keyring is the file the document's
// `dlp.keyring.file` names (a path, never keys): the control plane must see the same file as the
// proxies (a mounted Secret), and it never creates one.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export interface DetokenizeOutcome {
  /** token → original value, or null when it cannot be reversed (see errors). */
  values: Record<string, string | null>
  /** token → MALFORMED_TOKEN | UNKNOWN_KEY | INVALID_TOKEN, for those that failed. */
  errors: Record<string, string>
}

export interface Detokenizer {
  detokenize(tokens: string[], document: Record<string, unknown>): Promise<DetokenizeOutcome>
}

interface TokenizerModule {
  detokenize(token: string, keyring: unknown): { type: string; keyId: string; value: string }
}
interface KeyringModule {
  LocalKeyring: new (path: string, opts: { create: boolean }) => { load(): Promise<unknown> }
}

export async function loadDetokenizer(): Promise<Detokenizer | undefined> {
  const tokUrl = new URL('../filters/dlp/tokenizer.ts', import.meta.url)
  const ringUrl = new URL('../filters/dlp/keyring.ts', import.meta.url)
  if (!existsSync(fileURLToPath(tokUrl)) || !existsSync(fileURLToPath(ringUrl))) return undefined
  const tok = (await import(tokUrl.href)) as Partial<TokenizerModule>
  const ring = (await import(ringUrl.href)) as Partial<KeyringModule>
  if (typeof tok.detokenize !== 'function' || typeof ring.LocalKeyring !== 'function') return undefined
  const detokenize = tok.detokenize
  const LocalKeyring = ring.LocalKeyring
  return {
    async detokenize(tokens, document) {
      const dlp = (document.dlp ?? {}) as { keyring?: { file?: string } }
      const file = dlp.keyring?.file ?? './data/dlp-keyring.json'
      // Loaded per call: keys rotate on disk, and detokenization is rare and audited.
      const keyring = await new LocalKeyring(file, { create: false }).load()
      // Keyed by what the caller sent: null-prototype records, so a "token" named "__proto__"
      // is an entry of its own (on {} the assignment would set the prototype and vanish).
      const out: DetokenizeOutcome = { values: Object.create(null) as Record<string, string | null>, errors: Object.create(null) as Record<string, string> }
      for (const t of tokens) {
        try {
          out.values[t] = detokenize(t, keyring).value
        } catch (err) {
          out.values[t] = null
          out.errors[t] = (err as { code?: string }).code ?? 'INVALID_TOKEN'
        }
      }
      return out
    },
  }
}
