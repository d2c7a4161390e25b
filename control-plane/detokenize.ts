// POST /v1/dlp/detokenize reaches the DLP filter's tokenizer through this seam. The control plane
// does not import filters statically (rooms); it loads the DLP module's `detokenize` export at
// start when that module exists, and answers 501 otherwise.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export interface Detokenizer {
  /** token → original value, or null when the token is unknown or does not verify. */
  detokenize(tokens: string[], document: Record<string, unknown>): Promise<Record<string, string | null>>
}

type DetokenizeFn = (token: string, opts: { config: Record<string, unknown> }) => string | null | undefined | Promise<string | null | undefined>

export async function loadDetokenizer(): Promise<Detokenizer | undefined> {
  const candidates = ['../filters/dlp/tokenizer.ts', '../filters/dlp/index.ts']
  for (const rel of candidates) {
    const url = new URL(rel, import.meta.url)
    if (!existsSync(fileURLToPath(url))) continue
    const mod = (await import(url.href)) as { detokenize?: DetokenizeFn }
    if (typeof mod.detokenize !== 'function') continue
    const fn = mod.detokenize
    return {
      async detokenize(tokens, document) {
        const out: Record<string, string | null> = {}
        for (const t of tokens) {
          try {
            out[t] = (await fn(t, { config: document })) ?? null
          } catch {
            out[t] = null
          }
        }
        return out
      },
    }
  }
  return undefined
}
