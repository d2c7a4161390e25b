// DLP sweep 17: e-mail addresses and their tokens.
// 1. A percent-encoded address ("alice%40example.com" in a URL query or form body) got another
//    token (and keyed hash) than the same address written "alice@example.com": exports no longer
//    joined on it. The token input is now the address as written with "@"; tokens of addresses
//    already written so do not change (pinned below, computed with the code before the change).
// 2. An address that is a whole URL path segment ("https://x.example/users/alice@example.com/profile",
//    "GET /u/alice%40example.com") left an export readable. Rules email.value / email.urlencoded
//    @1.2.3 (pack igw-dlp-core@1.2.8); userinfo, asset names and handles are still no addresses.
// Detector checks through ExportScanner.visit, then exports through a real proxy (worker thread),
// a real node:http backend and an undici client on 127.0.0.1.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { CORPUS_SIZE, generateCorpus, PATH_CORPUS_SIZE, URL_CORPUS_SIZE } from '../../filters/dlp/eval/corpus.ts'
import { evaluate } from '../../filters/dlp/eval/evaluate.ts'
import type { KeyringSnapshot } from '../../filters/dlp/keyring.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../filters/dlp/scanner.ts'
import { detokenize, Tokenizer, verifyHash } from '../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const ring: KeyringSnapshot = { active: 'k1', keys: new Map([['k1', { id: 'k1', created: '2026-11-25T00:00:00.000Z', secret: new Uint8Array(32).fill(0x2a) }]]) }

const pack = RulePack.load(BUILTIN_RULE_PACK)

function scanner(action: string): ExportScanner {
  return new ExportScanner(pack, compileActions(pack, Object.fromEntries(pack.types.map((t) => [t.name, action]))), new Tokenizer(ring))
}

describe('tokens of an address do not depend on how it was spelled', () => {
  it('"%40"-encoded, with escapes in the local part, or a field value with mailto: → the token and hash of the address with "@"', () => {
    const t = new Tokenizer(ring)
    const tok = t.tokenize('email', 'alice@example.com')
    // before: three more tokens, one per spelling
    expect(t.tokenize('email', 'alice%40example.com')).toBe(tok)
    expect(t.tokenize('email', ' mailto:alice@example.com ')).toBe(tok)
    expect(t.tokenize('email', 'jane%2Bnews%40corp.example.org')).toBe(t.tokenize('email', 'jane+news@corp.example.org'))
    expect(t.tokenize('email', 'b%C3%BCcher%40example.de')).toBe(t.tokenize('email', 'bücher@example.de'))
    // the batch (whole JSON values) computes the same tokens as one-by-one
    const batch = t.batch()
    const pending = batch.add('email', 'alice%40example.com')
    batch.flush()
    expect(pending.value).toBe(tok)
    // keyed hashes join the same way, and verify against either spelling
    const h = t.hash('email', 'alice@example.com')
    expect(t.hash('email', 'alice%40example.com')).toBe(h)
    expect(verifyHash(h, 'email', 'alice%40example.com', ring)).toBe(true)
    // detokenize gives the address as written with "@"
    expect(detokenize(t.tokenize('email', 'alice%40example.com'), ring).value).toBe('alice@example.com')
  })

  it('tokens of addresses written with "@" are unchanged (pinned: computed before the change)', () => {
    const t = new Tokenizer(ring)
    expect(t.tokenize('email', 'alice@example.com')).toBe('tok_email_k1_4ILYm9M21vdJ0osoR4_UCqju2h4oGgwTXfJcj6PofHgb')
    expect(t.hash('email', 'alice@example.com')).toBe('hsh_email_k1_UCb03eNIkmBwimlKXbbwWw')
    // the domain's case and a "%" of the local part are kept: those tokens stay what they were
    expect(t.tokenize('email', 'Jane.Doe+news@Corp.Example.ORG')).toBe('tok_email_k1_aVIVfc0SKIDi5cWaj4F2qzXGlVXBtKpNMgcoN7Jv1JErkPQXQ_UuGod0QL6Tfw')
    expect(t.hash('email', 'Jane.Doe+news@Corp.Example.ORG')).toBe('hsh_email_k1_dt3TVKQU4qj4_hrjIfwCuQ')
    expect(t.tokenize('email', 'jörg@bücher.de')).toBe('tok_email_k1_qwdYZE_TT9q2Xh4FKImUOrL-cNA48KoAtjvf6btvXTk')
    // other types: the value as it is
    expect(t.tokenize('ssn_us', '123-45-6789')).not.toBe(t.tokenize('ssn_us', '123456789'))
  })

  it('through the scanner: the %40 form in a URL query tokenizes to the @ form\'s token; masks keep the written form', () => {
    const s = scanner('tokenize')
    const tok = new Tokenizer(ring).tokenize('email', 'alice@example.com')
    expect(s.visit('https://x.example/u?email=alice%40example.com&x=1', pack.fieldHint('url'))).toBe(`https://x.example/u?email=${tok}&x=1`)
    expect(s.visit('alice@example.com', pack.fieldHint('email'))).toBe(tok)
    expect(s.visit('mailto:alice@example.com', pack.fieldHint('email'))).toBe(tok)
    const m = scanner('mask')
    expect(m.visit('https://x.example/u?email=alice%40example.com', pack.fieldHint('url'))).toBe('https://x.example/u?email=a***%40example.com')
  })
})

describe('addresses in URL paths', () => {
  const m = scanner('mask')
  const visit = (text: string) => m.visit(text, pack.fieldHint('note'))
  function found(text: string): [string, string][] {
    const f: { type: string; value: string; rule: string }[] = []
    m.findings = f
    try {
      m.visit(text, pack.fieldHint('note'))
    } finally {
      m.findings = undefined
    }
    return f.map((x) => [x.value, x.rule])
  }

  it('a whole path segment is an address, raw or %40-encoded, in a URL, a bare path or a path inside a query', () => {
    // before: every one of these left the export readable
    expect(visit('https://x.example/users/alice@example.com/profile')).toBe('https://x.example/users/a***@example.com/profile')
    expect(visit('https://x.example/u/alice%40example.com')).toBe('https://x.example/u/a***%40example.com')
    expect(visit('/u/alice%40example.com/edit')).toBe('/u/a***%40example.com/edit')
    expect(visit('GET /api/users/alice@example.com/orders HTTP/1.1 200')).toBe('GET /api/users/a***@example.com/orders HTTP/1.1 200')
    expect(visit('https://app.example.com/login?next=/u/alice@example.com')).toBe('https://app.example.com/login?next=/u/a***@example.com')
    expect(visit('https://x.example/u?next=https://sso.example.com/u/alice@example.com')).toBe('https://x.example/u?next=https://sso.example.com/u/a***@example.com')
    expect(visit('see https://x.example/people/alice@example.com.')).toBe('see https://x.example/people/a***@example.com.')
    expect(visit('https://x.example/users/alice@example.com?tab=1#top')).toBe('https://x.example/users/a***@example.com?tab=1#top')
    expect(found('https://x.example/users/alice@example.com/profile')).toEqual([['alice@example.com', 'email.value@1.2.7']])
    expect(found('/u/alice%40example.com')).toEqual([['alice%40example.com', 'email.urlencoded@1.2.7']])
  })

  it('userinfo, asset names, package versions, handles and scp remotes are still no addresses', () => {
    for (const text of [
      'https://alice@example.com/',
      'https://alice@example.com/inbox',
      '//alice@example.com/x',
      'ftp://alice%40example.com@ftp.example.org/',
      'https://x.example/u?next=https://alice@example.com/',
      'https://example.com/static/logo@2x.png?v=1',
      'https://cdn.example.com/img/hero@2x.avif',
      'https://files.example.org/reports/revenue@q3.xlsx',
      'https://cdn.example.net/npm/bootstrap@5.3.0/dist/index.min.js',
      'https://medium.com/@jane.doe/post-123456',
      'https://x.example/u/alice@example.com_old/',
      'git@github.com/org/repo',
      'git@github.com:org/repo.git',
      'a@b.com/path',
    ]) {
      expect({ text, out: visit(text) }).toEqual({ text, out: undefined })
    }
  })

  it('the rule pack says which rules changed: email rules at 1.2.3 (the pack at 1.2.4 since sweep 19b), the others keep their version', () => {
    expect(pack.version).toBe('1.2.12') // 1.2.11: field words, Mir/RuPay/Troy cards (sweep 28g); 1.2.10: lower-case IBANs (sweep 26j); 1.2.9: only spaced groups of at most 6 joined across a line break (sweep 24i); 1.2.8: card numbers, SSNs and IBANs wrapped at a space across a line break (sweep 23e); 1.2.7: encoded separators, twice-encoded values and values inside an encoded URL (sweep 22b); 1.2.6: _-led addresses, %2B-encoded and 00-prefixed numbers, no Add::Bad IPv6 (sweep 21d); 1.2.5: ipv4.value refuses version tags (sweep 20p); 1.2.4: phone_e164.field reads numbers written without their + (sweep 19b)
    const v = Object.fromEntries(pack.rules.map((r) => [r.id, r.version]))
    expect(v).toMatchObject({ 'email.value': '1.2.7', 'email.urlencoded': '1.2.7', 'phone_e164.national': '1.2.12', 'credit_card.value': '1.2.11', 'ssn_us.value': '1.2.1' })
  })

  it('the corpus carries path cases after the earlier records, which stay the same, and every type is at 100 %', () => {
    const corpus = generateCorpus()
    expect(corpus.length).toBe(CORPUS_SIZE + URL_CORPUS_SIZE + PATH_CORPUS_SIZE)
    const paths = corpus.slice(CORPUS_SIZE + URL_CORPUS_SIZE)
    const labeled = paths.flatMap((r) => r.labels.map((l) => r.fields[l.field]!))
    expect(labeled.some((t) => /^https:\/\/[^ ]+\/(users|u|accounts|members)\/[^ /]+@/.test(t))).toBe(true)
    expect(labeled.some((t) => t.includes('%40'))).toBe(true)
    expect(labeled.some((t) => t.startsWith('GET /api/users/') || t.startsWith('PUT /api/users/') || t.startsWith('DELETE /api/users/'))).toBe(true)
    const r = evaluate(undefined, corpus)
    for (const t of r.types) expect({ type: t.type, fp: t.fp, fn: t.fn }).toEqual({ type: t.type, fp: 0, fn: 0 })
    // the path records alone: addresses found, look-alikes not
    const p = evaluate(undefined, paths).types.find((t) => t.type === 'email')!
    expect(p.support).toBeGreaterThan(300)
    expect({ fp: p.fp, fn: p.fn }).toEqual({ fp: 0, fn: 0 })
  })
})

describe('an export through a real proxy', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const records = [
    { id: 1, email: 'alice@example.com', link: 'https://app.example.com/u?email=alice%40example.com&x=1' },
    { id: 2, link: 'https://app.example.com/users/alice@example.com/profile', note: 'GET /u/bob%40example.org/edit HTTP/1.1' },
    { id: 3, contact_email: 'bob@example.org', avatar: 'https://cdn.example.com/img/hero@2x.png' },
  ]
  const body = records.map((r) => JSON.stringify(r)).join('\n') + '\n'

  beforeAll(async () => {
    raw = await startRawBackend((_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.end(body)
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep17-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, presets: { tok_email: { email: 'tokenize' } }, policy: { allowedPresets: ['tok_email'] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'tok_email', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('the same address gets one token however the export spelled it, and addresses in URL paths leave as tokens', async () => {
    const r = await request(`${proxy.url}/export/people.ndjson`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    for (const secret of ['alice@example.com', 'alice%40example.com', 'bob@example.org', 'bob%40example.org']) expect({ secret, leaked: text.includes(secret) }).toEqual({ secret, leaked: false })
    const out = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>)
    const alice = out[0]!.email!
    expect(alice).toMatch(/^tok_email_k1_[A-Za-z0-9_-]+$/)
    expect(out[0]!.link).toBe(`https://app.example.com/u?email=${alice}&x=1`)
    expect(out[1]!.link).toBe(`https://app.example.com/users/${alice}/profile`)
    const bob = out[2]!.contact_email!
    expect(bob).toMatch(/^tok_email_k1_/)
    expect(out[1]!.note).toBe(`GET /u/${bob}/edit HTTP/1.1`)
    expect(out[2]!.avatar).toBe('https://cdn.example.com/img/hero@2x.png')
    expect(r.trailers['x-dlp'] ?? r.headers['x-dlp']).toBe('preset=tok_email; masked=0; tokenized=5; hashed=0; redacted=0; rules=igw-dlp-core@1.2.12')
  })
})
