// Tokens name the key they were made with (tok_<type>_<keyId>_…). A keyring reload that gave a
// known id another secret — the file lost and recreated by `create: true` under the same `k1`, a
// hand edit — was taken: every token issued under that id became irreversible, and the same value
// tokenized differently from then on. Such a reload is refused (counted, the keyring in use kept);
// adding and promoting keys still reload. The real keyring file, its real reload, the tokenizer.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { expect, it } from 'vitest'
import { addKey, ensureKeyringFile, LocalKeyring, parseKeyring, promoteKey, serializeKeyring } from '../../../filters/dlp/keyring.ts'
import { KeyringState } from '../../../filters/dlp/runtime.ts'

/** Run the background reload as the 2 s check would, until `done` says it landed. */
async function reload(state: KeyringState, at: { t: number }, done: () => boolean): Promise<void> {
  await expect
    .poll(() => {
      at.t += 3_000
      state.maybeRefresh(at.t)
      return done()
    }, { timeout: 5_000, interval: 20 })
    .toBe(true)
}

it('refuses a reload that gives a known key id another secret, and takes added and promoted keys', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'igw-kr23-')), 'keyring.json')
  ensureKeyringFile(file)
  const state = await KeyringState.open(new LocalKeyring(file, { create: false }))
  let failures = 0
  state.attach({ logger: pino({ level: 'silent' }), failures: { inc: () => void failures++ } })
  const at = { t: performance.now() }
  const before = state.tokenizer
  const ring = parseKeyring(readFileSync(file, 'utf8'), file)
  const active = ring.active

  // the same id, a new secret (the file recreated)
  const swapped = new Map(ring.keys)
  swapped.set(active, { ...ring.keys.get(active)!, secret: new Uint8Array(32).fill(7) })
  writeFileSync(file, serializeKeyring({ active, keys: swapped }), { mode: 0o600 })
  await reload(state, at, () => failures === 1)
  expect(state.tokenizer).toBe(before)

  // back to the real file, then a key added and promoted: reloaded as before
  writeFileSync(file, serializeKeyring(ring), { mode: 0o600 })
  const id = addKey(file)
  promoteKey(file, id)
  await reload(state, at, () => state.tokenizer.activeKeyId === id)
  expect(failures).toBe(1)
})
