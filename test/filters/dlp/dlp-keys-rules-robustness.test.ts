// DLP key material, rule packs and reversal under adversarial input: keyring files, detokenize
// requests to a real control plane, operator rule packs and masks on values of odd shapes. Each
// test names what must not leak or break.
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addKey, ensureKeyringFile, LocalKeyring, parseKeyring, promoteKey, serializeKeyring } from '../../../filters/dlp/keyring.ts'
import { KeyringState } from '../../../filters/dlp/runtime.ts'
import { maskerFor } from '../../../filters/dlp/masks.ts'
import { BUILTIN_RULE_PACK, RulePack, RulePackError } from '../../../filters/dlp/rule-pack.ts'
import { detokenize, DetokenizeError, Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestControlPlane, type TestControlPlane } from '../../helpers/control-plane.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'
import { request } from 'undici'
import type { ServerResponse } from 'node:http'

const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-keys-rules-'))
const json = (v: unknown) => JSON.stringify(v)

function ringText(keys: { id: string; secret: string }[], active = keys[0]!.id): string {
  return json({ format: 'igw-dlp-keyring/1', active, keys: keys.map((k) => ({ ...k, created: '2026-11-25T00:00:00.000Z' })) })
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof DetokenizeError) return err.code
    throw err
  }
  return undefined
}

describe('keyring files', () => {
  it('a secret with characters outside base64 is refused (it loaded as some other key), naming the file and key', async () => {
    const secret = randomBytes(32).toString('base64url')
    const file = join(dir, 'stray.json')
    // 43 valid characters plus a stray "!" and a line break: Buffer.from skips both, 32 bytes.
    for (const bad of [`${secret.slice(0, 20)}!${secret.slice(20)}`, `${secret.slice(0, 20)}\n${secret.slice(20)}`, `${secret}AAAA`, secret.slice(0, 42)]) {
      writeFileSync(file, ringText([{ id: 'k1', secret: bad }]), { mode: 0o600 })
      await expect(new LocalKeyring(file, { create: false }).load(), JSON.stringify(bad)).rejects.toThrow(`${file}: keys[0].secret: expected 32 bytes, base64url`)
    }
    // The messages never carry the secret.
    writeFileSync(file, ringText([{ id: 'k1', secret: `${secret.slice(0, 20)}!${secret.slice(20)}` }]), { mode: 0o600 })
    await expect(new LocalKeyring(file, { create: false }).load()).rejects.not.toThrow(secret.slice(0, 20))
    // What is valid stays valid: base64url, padded, and standard base64 as KMS tools print it.
    const raw = randomBytes(32)
    for (const ok of [raw.toString('base64url'), `${raw.toString('base64url')}=`, raw.toString('base64')]) {
      writeFileSync(file, ringText([{ id: 'k1', secret: ok }]), { mode: 0o600 })
      const ring = await new LocalKeyring(file, { create: false }).load()
      expect(Buffer.from(ring.keys.get('k1')!.secret).equals(raw), ok).toBe(true)
    }
  })

  it('a promotion at the same size and mtime (coarse timestamps) is still noticed', async () => {
    const file = join(dir, 'coarse.json')
    ensureKeyringFile(file)
    addKey(file)
    // What a filesystem with 1 s timestamps shows: both writes land in the same second.
    const second = Math.floor(Date.now() / 1000) - 60
    utimesSync(file, second, second)
    const state = await KeyringState.open(new LocalKeyring(file, { create: false }))
    expect(state.tokenizer.activeKeyId).toBe('k1')
    const size = statSync(file).size
    promoteKey(file, 'k2') // same length: "k1" → "k2"
    utimesSync(file, second, second)
    expect(statSync(file).size).toBe(size)
    let t = performance.now()
    await waitUntil(() => {
      state.maybeRefresh((t += 5_000))
      return state.tokenizer.activeKeyId === 'k2'
    }, 5_000, 'promotion picked up')
  })

  it('missing, empty, truncated, duplicate ids, unknown active key: errors name the file and path', async () => {
    const s = randomBytes(32).toString('base64url')
    const file = join(dir, 'broken.json')
    await expect(new LocalKeyring(join(dir, 'nope.json'), { create: false }).load()).rejects.toThrow(`cannot read DLP keyring ${join(dir, 'nope.json')}`)
    const cases: [string, string][] = [
      ['', `${file}: not JSON`],
      [ringText([{ id: 'k1', secret: s }]).slice(0, 60), `${file}: not JSON`],
      [ringText([{ id: 'k1', secret: s }, { id: 'k1', secret: s }]), `${file}: keys[1].id: duplicate key id "k1"`],
      [ringText([{ id: 'k1', secret: s }], 'k7'), `${file}: active: expected the id of a key in the ring`],
      [ringText([{ id: 'k_1', secret: s }]), `${file}: keys[0].id: expected 1-32 letters or digits`],
    ]
    for (const [text, message] of cases) {
      writeFileSync(file, text, { mode: 0o600 })
      await expect(new LocalKeyring(file, { create: false }).load()).rejects.toThrow(message)
    }
  })
})

describe('a keyring replaced under a running proxy', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const held: ServerResponse[] = []
  afterAll(async () => {
    for (const r of held) r.destroy()
    await proxy?.close()
    await raw?.close()
  })

  it('a half-written keyring keeps the last good keys, for the export in flight and the next ones; logged with its path', async () => {
    const ringFile = join(mkdtempSync(join(tmpdir(), 'igw-dlp-ring-')), 'keyring.json')
    raw = await startRawBackend((req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      if (req.url === '/export/slow') {
        res.write(`${json({ email: 'first@example.com' })}\n`)
        held.push(res)
        return
      }
      res.end(`${json({ email: 'next@example.com' })}\n`)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      tenants: { acme: {} },
      dlp: { keyring: { file: ringFile }, policy: { enabled: false } },
      routes: [{ name: 'exp', match: { pathPrefix: '/export/' }, upstream: raw.url, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
    const headers = { 'x-tenant-id': 'acme' }
    // NDJSON heads wait for the lookahead (or the end): the response comes once the backend ends.
    const slowDone = request(`${proxy.url}/export/slow`, { headers })
    await waitUntil(() => held.length === 1, 5_000, 'slow export started')
    const ring = await new LocalKeyring(ringFile, { create: false }).load()
    const good = readFileSync(ringFile, 'utf8')
    // A non-atomic writer caught half way; then wait past the 2 s check interval.
    writeFileSync(ringFile, good.slice(0, Math.floor(good.length / 2)))
    await sleep(2_100)
    const first = await request(`${proxy.url}/export/next`, { headers })
    expect(first.statusCode).toBe(200)
    await first.body.text()
    await waitUntil(() => proxy.logs.find('DLP keyring reload failed; keeping the last good keyring').length > 0, 5_000, 'reload failure logged')
    const logged = proxy.logs.find('DLP keyring reload failed; keeping the last good keyring')[0]!
    expect(JSON.stringify(logged)).toContain(ringFile)
    for (const k of ring.keys.values()) expect(proxy.logs.raw.join('\n')).not.toContain(Buffer.from(k.secret).toString('base64url'))
    // Later exports still tokenize, with the old key.
    const next = await request(`${proxy.url}/export/next`, { headers })
    expect(next.statusCode).toBe(200)
    const nextToken = (JSON.parse((await next.body.text()).trim()) as { email: string }).email
    expect(detokenize(nextToken, ring).value).toBe('next@example.com')
    // The export in flight finishes under the keys it started with.
    held[0]!.end(`${json({ email: 'second@example.com' })}\n`)
    const slow = await slowDone
    expect(slow.statusCode).toBe(200)
    const lines = (await slow.body.text()).trim().split('\n').map((l) => (JSON.parse(l) as { email: string }).email)
    expect(lines.map((t) => detokenize(t, ring).value)).toEqual(['first@example.com', 'second@example.com'])
  }, 20_000)
})

describe('detokenize: what a token is, and why it does not reverse', () => {
  const secret = randomBytes(32).toString('base64url')
  const ring = parseKeyring(ringText([{ id: 'k1', secret }]), 'ring')

  it('a token whose shape is wrong is MALFORMED_TOKEN even when its key id is in the ring (not "rotated out")', () => {
    const good = new Tokenizer(ring).tokenize('email', 'ada@example.com')
    const payload = good.slice('tok_email_k1_'.length)
    for (const t of ['tok_email_k1_', `tok_email_k1_${payload}ä`, `tok_Email_k1_${payload}`, `tok_email_k1_${payload}=`, `tok_email_k1_${payload} `, 'tok_email_k1', 'tok__k1_AAAA']) {
      expect(codeOf(() => detokenize(t, ring)), t).toBe('MALFORMED_TOKEN')
    }
    // What the other codes mean stays: truncated/altered → INVALID_TOKEN; a key the ring lost → UNKNOWN_KEY.
    expect(codeOf(() => detokenize(good.slice(0, -6), ring))).toBe('INVALID_TOKEN')
    expect(codeOf(() => detokenize(good.replace('_k1_', '_k2_'), ring))).toBe('UNKNOWN_KEY')
    expect(detokenize(good, ring).value).toBe('ada@example.com')
  })

  it('a keyring shrunk after rotation: old tokens are UNKNOWN_KEY, new ones still reverse', async () => {
    const file = join(dir, 'rotate.json')
    ensureKeyringFile(file)
    const old = new Tokenizer(await new LocalKeyring(file, { create: false }).load()).tokenize('ssn_us', '123-45-6789')
    promoteKey(file, addKey(file))
    const both = await new LocalKeyring(file, { create: false }).load()
    const fresh = new Tokenizer(both).tokenize('ssn_us', '123-45-6789')
    // Drop k1: the ring now holds only k2.
    writeFileSync(file, serializeKeyring({ active: 'k2', keys: new Map([['k2', both.keys.get('k2')!]]) }), { mode: 0o600 })
    const shrunk = await new LocalKeyring(file, { create: false }).load()
    expect(codeOf(() => detokenize(old, shrunk))).toBe('UNKNOWN_KEY')
    expect(detokenize(fresh, shrunk).value).toBe('123-45-6789')
  })
})

describe('detokenize through a real control plane', () => {
  let cp: TestControlPlane
  let officer: string
  let token: string
  beforeAll(async () => {
    cp = await startTestControlPlane()
    officer = await cp.token({ sub: 'dora', roles: ['dlp-officer'] })
    const ringFile = join(cp.dir, 'dlp-keyring.json')
    ensureKeyringFile(ringFile)
    token = new Tokenizer(await new LocalKeyring(ringFile, { create: false }).load()).tokenize('email', 'ada@example.com')
    const put = await cp.api('/v1/dlp', { method: 'PUT', body: json({ keyring: { file: ringFile, create: false } }) })
    expect(put.status).toBeLessThan(300)
  })
  afterAll(async () => {
    await cp?.close()
  })
  const detok = (tokens: unknown[]) => cp.api('/v1/dlp/detokenize', { method: 'POST', body: json({ tokens }), token: officer, headers: { 'x-justification': 'robustness test' } })

  it('tokens made of thousands of "_" cost what any token costs (was ~0.3 s of event loop each)', async () => {
    const hostile = Array.from({ length: 40 }, (_, i) => `tok_${'a_'.repeat(8_180)}${i}`)
    const started = performance.now()
    const res = await detok([...hostile, token])
    const ms = performance.now() - started
    expect(res.status).toBe(200)
    const body = (await res.json()) as { values: Record<string, string | null>; errors: Record<string, string> }
    expect(body.values[token]).toBe('ada@example.com')
    expect(body.errors[hostile[0]!]).toBe('UNKNOWN_KEY')
    // ~13 s before (quadratic split search); milliseconds now. Generous for a loaded machine.
    expect(ms).toBeLessThan(2_500)
  }, 30_000)

  it('every token sent gets an answer, whatever its text: __proto__, constructor, duplicates, unicode', async () => {
    const odd = ['__proto__', 'constructor', 'toString', 'tok_émail_k1_AAAA', '💥', '', token, token]
    const res = await detok(odd)
    expect(res.status).toBe(200)
    const text = await res.text()
    const body = JSON.parse(text) as { values: Record<string, string | null>; errors: Record<string, string> }
    for (const t of odd) {
      expect(Object.hasOwn(body.values, t), t).toBe(true)
      if (t !== token) expect(body.errors[t], t).toBe('MALFORMED_TOKEN')
    }
    expect(body.values[token]).toBe('ada@example.com')
    expect(Object.keys(body.values)).toHaveLength(odd.length - 1) // the duplicate is one entry
  })

  it('a keyring that cannot be read is a 503 naming the file, and the next good one is used again', async () => {
    const ringFile = join(cp.dir, 'dlp-keyring.json')
    const good = readFileSync(ringFile, 'utf8')
    writeFileSync(ringFile, good.slice(0, 50))
    const res = await detok([token])
    expect(res.status).toBe(503)
    const text = await res.text()
    expect(text).toContain(`${ringFile}: not JSON`)
    expect(text).not.toContain(good.slice(0, 50).split('"secret"')[1] ?? '\u0000')
    writeFileSync(ringFile, good)
    const again = (await (await detok([token])).json()) as { values: Record<string, string | null> }
    expect(again.values[token]).toBe('ada@example.com')
  })
})

describe('rule packs', () => {
  const builtin = JSON.parse(readFileSync(BUILTIN_RULE_PACK, 'utf8')) as Record<string, unknown> & { rules: Record<string, unknown>[]; types: Record<string, unknown> }
  function packFile(name: string, edit: (p: typeof builtin) => void): string {
    const p = structuredClone(builtin)
    edit(p)
    const file = join(dir, name)
    writeFileSync(file, json(p))
    return file
  }

  it('a pack name an HTTP header cannot carry is refused at load (it crashed the worker on every export)', () => {
    // Through a real proxy this pack took the worker thread down: the x-dlp header is
    // `rules=<pack>@<version>` and writeHead threw ERR_INVALID_CHAR outside any handler.
    for (const name of ['règles 规则', 'acme\r\nx-injected: 1', 'a; rules=other', '']) {
      const file = packFile('bad-name.json', (p) => {
        p.pack = name
      })
      expect(() => RulePack.load(file), name).toThrow(`${file}: pack: expected a name of 1-64 letters, digits, ".", "_" or "-"`)
    }
    expect(RulePack.load(packFile('ok-name.json', (p) => (p.pack = 'acme-dlp_rules.v2'))).name).toBe('acme-dlp_rules.v2')
  })

  it('"flags" is honoured (i, m, s as inline modifiers) or refused, never silently dropped', () => {
    const withFlags = (flags: unknown) =>
      packFile('flags.json', (p) => {
        p.types = { ...p.types, badge: { risk: 'medium' } }
        p.rules = [...p.rules, { id: 'badge.value', version: '1.0.0', type: 'badge', pattern: 'acme-[a-z]{4}\\d{4}', flags }]
      })
    const pack = RulePack.load(withFlags('i'))
    const badge = pack.typeIndex('badge')
    const found = pack.combined(1 << badge).regex
    found.lastIndex = 0
    // Written in upper case: a case-insensitive rule must find it (was: flags ignored, value left).
    expect(found.exec('badge ACME-QWER1234 issued')?.[0]).toBe('ACME-QWER1234')
    for (const bad of ['u', 'g', 'ii', 'x', 7]) {
      const file = withFlags(bad)
      expect(() => RulePack.load(file), String(bad)).toThrow(`${file}: rules[${builtin.rules.length}].flags: expected any of "i", "m", "s" (each once)`)
    }
  })

  it('a rule that backtracks catastrophically is refused at load, naming the rule and the repetition', () => {
    // Loaded before, these stalled the worker on the first long near-miss (the watchdog then
    // killed it, export after export): (?:a+)+b over 26 a's is 2 s, \w+@ over a 50 KB word 0.8 s.
    const cases: [string, string][] = [
      ['(?:a+)+b', 'a+'],
      ['(?:[A-Z]{2}\\d*)*!', '\\d*'],
      ['[A-Za-z0-9._%+-]+@acme\\.test', '[A-Za-z0-9._%+-]+'],
      ['ID-\\d{4,}', '\\d{4,}'],
      ['(?:(?:\\.x)*)+y', '(?:(?:\\.x)*)+'],
    ]
    for (const [pattern, shown] of cases) {
      const file = packFile('redos.json', (p) => {
        p.types = { ...p.types, badge: { risk: 'medium' } }
        p.rules = [...p.rules, { id: 'badge.value', version: '1.0.0', type: 'badge', pattern }]
      })
      expect(() => RulePack.load(file), pattern).toThrow(`${file}: rules[${builtin.rules.length}].pattern: "${shown}" repeats without bound`)
    }
    // Bounded runs, and a repeated group whose body is bounded (the built-in e-mail labels), load.
    const ok = packFile('bounded.json', (p) => {
      p.types = { ...p.types, badge: { risk: 'medium' } }
      p.rules = [...p.rules, { id: 'badge.value', version: '1.0.0', type: 'badge', pattern: '[A-Z]{2}-\\d{4,8}(?:\\.[a-z]{1,8})*(?![\\w+])' }]
    })
    expect(RulePack.load(ok).rules.at(-1)!.id).toBe('badge.value')
  })

  it('null or misshapen entries are precise errors naming the path, not TypeErrors', () => {
    const cases: [string, (p: typeof builtin) => void, string][] = [
      ['rules-null.json', (p) => (p.rules = [null as never]), 'rules[0]: expected an object'],
      ['fields-null.json', (p) => (p.fields = { email: null }), 'fields.email: expected an object'],
      ['fields-list.json', (p) => (p.fields = ['email']), 'fields: expected an object'],
      ['validator-proto.json', (p) => (p.rules[0]!.validator = 'constructor'), 'rules[0].validator: expected one of'],
      ['dup-id.json', (p) => (p.rules = [...p.rules, p.rules[0]!]), `rules[${builtin.rules.length}].id: duplicate rule id "email.value"`],
      ['unknown-type.json', (p) => (p.rules[0]!.type = 'passport'), 'rules[0].type: expected one of'],
      ['empty.json', (p) => (p.rules = []), 'rules: expected a non-empty list'],
      ['version.json', (p) => (p.version = '1.2.0-beta; x'), 'version: expected "major.minor[.patch]"'],
    ]
    for (const [name, edit, message] of cases) {
      const file = packFile(name, edit)
      let err: unknown
      try {
        RulePack.load(file)
      } catch (e) {
        err = e
      }
      expect(err, name).toBeInstanceOf(RulePackError)
      expect((err as Error).message, name).toContain(`${file}: ${message}`)
    }
  })
})

describe('masks never give the value back', () => {
  it('a custom type named like an Object.prototype member is masked, not returned as it was', () => {
    // maskerFor("constructor") was Object(): the "mask" was the value itself.
    const masked = String(maskerFor('constructor')('4111-secret-7788'))
    expect(masked).not.toContain('secret')
    expect(typeof maskerFor('constructor')('x')).toBe('string')
  })

  it('short values keep at most a third of themselves; built-in masks on values without their shape too', () => {
    // A custom pack's type (or its looser rule for a built-in type) may find short values.
    const cases: [string, string][] = [
      ['pin', '12345'],
      ['pin', '1234567'],
      ['pin', 'abc'],
      ['ssn_us', '12-34'],
      ['credit_card', '98765'],
      ['iban', 'DE12'],
      ['ipv4', '10.2'],
      ['ipv6', 'ab:cd'],
      ['phone_e164', '55512'],
    ]
    for (const [type, value] of cases) {
      const out = maskerFor(type)(value)
      const kept = [...out].filter((c) => c !== '*').length
      expect(kept, `${type} ${value} → ${out}`).toBeLessThanOrEqual(Math.floor(value.length / 3))
      expect(out, `${type} ${value}`).not.toBe(value)
    }
    // The documented shapes of valid values are unchanged.
    expect(maskerFor('ssn_us')('123-45-6789')).toBe('***-**-6789')
    expect(maskerFor('credit_card')('4111 1111 1111 1111')).toBe('**** **** **** 1111')
    expect(maskerFor('iban')('DE89 3704 0044 0532 0130 00')).toBe('DE** **** **** **** **30 00')
    expect(maskerFor('ipv4')('203.0.113.9')).toBe('203.0.*.*')
    expect(maskerFor('ipv6')('2001:db8::1')).toBe('2001:db8:*')
    expect(maskerFor('phone_e164')('+1 202 555 0143')).toBe('+1*******0143')
    expect(maskerFor('pin')('123456789012')).toBe('********9012')
  })
})
