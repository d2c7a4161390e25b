// DLP runtime sweep 17: what a worker keeps loaded across config versions, and the e-mail mask of
// a field value with blanks around it. Real proxy, real backend, real opa-wasm.
import { mkdtempSync, rmSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dlpConfig } from '../../config/dlp.ts'
import { DLP_SHARED_CACHE_MAX, KeyringState, dlpShared, dlpSharedCacheSizes } from '../../filters/dlp/runtime.ts'
import { LocalKeyring, addKey, ensureKeyringFile, promoteKey, type KeyringSnapshot } from '../../filters/dlp/keyring.ts'
import { detokenize } from '../../filters/dlp/tokenizer.ts'
import { maskerFor } from '../../filters/dlp/masks.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-runtime-sweep17-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('loaded export policies do not pile up across config versions', () => {
  it('every distinct dlp.policy (here: allowedPresets edited 40 times) used to stay loaded for the life of the worker', async () => {
    const keyring = join(dir, 'keys', 'ring.json')
    const cfgFor = (i: number) => dlpConfig.parse({ keyring: { file: keyring, create: true }, policy: { enabled: true, allowedPresets: ['tokenize_strict', `p${i}`] } })
    const first = await dlpShared(cfgFor(0))
    expect(first.policy!.evaluate({ preset: 'p0' })).toMatchObject({ allow: true })
    for (let i = 1; i < 40; i++) {
      const s = await dlpShared(cfgFor(i))
      // each version still gets its own data: the cache never hands back another config's policy
      expect(s.policy!.evaluate({ preset: `p${i}` })).toMatchObject({ allow: true })
      expect(s.policy!.evaluate({ preset: `p${i - 1}` })).toMatchObject({ allow: false })
    }
    // One wasm instance (~180 KB) per config version ever seen, before: 40 here.
    expect(dlpSharedCacheSizes().policies).toBeLessThanOrEqual(DLP_SHARED_CACHE_MAX)
    // The most recent one is reused as it is (no reload cost when the config does not change).
    const last = await dlpShared(cfgFor(39))
    expect((await dlpShared(cfgFor(39))).policy).toBe(last.policy)
    // A policy evicted long ago is loaded again, correctly, when a config names it again; and the
    // evaluator a filter still holds keeps working.
    const again = await dlpShared(cfgFor(0))
    expect(again.policy!.evaluate({ preset: 'p0' })).toMatchObject({ allow: true })
    expect(first.policy!.evaluate({ preset: 'p0' })).toMatchObject({ allow: true })
  })
})

describe('a key promoted while the keyring is being opened', () => {
  it('is picked up by the next check (the version was read after the keys, so the promotion looked already loaded)', async () => {
    const file = join(dir, 'keys', 'race.json')
    ensureKeyringFile(file)
    addKey(file) // k2, inactive
    const local = new LocalKeyring(file, { create: false })
    let promoted = false
    // The real file provider; the operator's `promoteKey` lands right after the keys were read,
    // before KeyringState.open asked for the version (what a rotation during a config load does).
    const provider = {
      description: local.description,
      version: () => local.version(),
      load: async (): Promise<KeyringSnapshot> => {
        const ring = await local.load()
        if (!promoted) {
          promoted = true
          promoteKey(file, 'k2')
        }
        return ring
      },
    }
    const state = await KeyringState.open(provider)
    expect(state.tokenizer.activeKeyId).toBe('k1') // what was read: the promotion came after
    let now = performance.now()
    await expect
      .poll(() => {
        state.maybeRefresh((now += 5_000))
        return state.tokenizer.activeKeyId
      }, { timeout: 10_000, interval: 50 })
      .toBe('k2')
    // Tokens of both keys still reverse with the keyring now in use.
    const ring = await new LocalKeyring(file, { create: false }).load()
    expect(detokenize(state.tokenizer.tokenize('email', 'jane@corp.com'), ring)).toMatchObject({ keyId: 'k2', value: 'jane@corp.com' })
  })
})

describe('the e-mail mask of a field value with blanks around it', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const BODY = JSON.stringify({ contacts: [{ email: ' alice@example.com' }, { email: '\tbob@example.com ' }, { email: ' mailto:carol@example.com' }, { email: 'dave@example.com' }] })

  beforeAll(async () => {
    raw = await startRawBackend((_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(BODY)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(dir, 'keys', 'ring-mask.json') }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'mask_basic', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('keeps the first character of the address, not the leading blank (" alice@example.com" was " ***@example.com")', async () => {
    const res = await request(`${proxy.url}/export/contacts.json`)
    expect(res.statusCode).toBe(200)
    const body = (await res.body.json()) as { contacts: { email: string }[] }
    expect(body.contacts.map((c) => c.email)).toEqual([' a***@example.com', '\tb***@example.com ', ' mailto:c***@example.com', 'd***@example.com'])
    expect(res.headers['x-dlp']).toContain('masked=4')
  })

  it('the masker alone: blanks and "mailto:" (any case) before the address are kept as they are', () => {
    const m = maskerFor('email')
    expect(m(' alice@x.com')).toBe(' a***@x.com')
    expect(m('\u00a0alice@x.com')).toBe('\u00a0a***@x.com')
    expect(m('MAILTO:bob@x.com')).toBe('MAILTO:b***@x.com')
    expect(m('mailto:alice@x.com')).toBe('mailto:a***@x.com')
    expect(m('alice%40x.com')).toBe('a***%40x.com')
    expect(m('@x.com')).toBe('***')
  })
})
