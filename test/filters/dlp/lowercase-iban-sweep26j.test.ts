// DLP sweep 26j: an IBAN written in lower case ("de89370400440532013000", as a form lower-cased it)
// left every export readable: iban.value only matched capitals, so no mask, token or block. Now
// (iban.value@1.2.10, pack 1.2.10; 1.2.11 since) one written in capitals or all in lower case is found; mixed
// case (a random base62 id passes mod-97 one time in 97) still is not. Scanner driven directly,
// then a real proxy (worker thread), a real backend and an undici client on 127.0.0.1.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const masker = () => new ExportScanner(pack, compileActions(pack, { iban: 'mask' }), undefined)

describe('lower-case IBANs in free text (sweep 26j)', () => {
  it.each([
    ['refund to de89370400440532013000 today', 'refund to de****************3000 today'],
    ['refund to de89 3704 0044 0532 0130 00 today', 'refund to de** **** **** **** **30 00 today'],
    ['gb82west12345698765432', 'gb****************5432'],
    ['iban: gb82 west 1234 5698 7654 32', 'iban: gb** **** **** **** **54 32'],
    // wrapped at a space, as capitals are
    ['pay de89 3704 0044\n0532 0130 00 now', 'pay de** **** ****\n**** **30 00 now'],
    // capitals unchanged
    ['refund to DE89370400440532013000 today', 'refund to DE****************3000 today'],
  ])('%j', (text, want) => {
    expect(masker().visit(text, 0)).toBe(want)
  })

  it('the rule that found it is iban.value@1.2.10, in pack 1.2.12', () => {
    const s = masker()
    s.visit('de89370400440532013000', 0)
    expect(pack.version).toBe('1.2.12')
    expect(Object.fromEntries(s.ruleCounts)).toEqual({ 'iban.value@1.2.10': 1 })
  })

  it('no new false alarms: bad check digits, wrong length, mixed case, inside a longer token', () => {
    for (const v of [
      'acct de89370400440532013001', // check digits fail
      'acct de8937040044053201300', // one short for DE
      'id Gb82West12345698765432', // mixed case: a base62 id look-alike that passes mod-97 upper-cased
      'id GB82west12345698765432',
      'key xde89370400440532013000',
      'sha de89370400440532013000ab',
    ]) expect({ v, out: masker().visit(v, 0) }).toEqual({ v, out: undefined })
  })
})

describe('a lower-case IBAN through a real proxy (sweep 26j)', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-26j-iban-'))
  const BODY = `${JSON.stringify({ id: 1, note: 'pay to de89 3704 0044 0532 0130 00 please' })}\n${JSON.stringify({ id: 2, note: 'ok' })}\n`
  beforeAll(async () => {
    raw = await startRawBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      res.end(BODY)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { iban: 'mask' }, b: { iban: 'block' } }, policy: { enabled: false } },
      routes: [
        { name: 'mask', match: { pathPrefix: '/m/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/m/' }] } }] },
        { name: 'block', match: { pathPrefix: '/b/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'b', exports: { paths: [{ prefix: '/b/' }] } }] },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('masked on its way out', async () => {
    const r = await request(`${proxy.url}/m/export`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).not.toContain('3704')
    expect(JSON.parse(text.split('\n')[0]!)).toEqual({ id: 1, note: 'pay to de** **** **** **** **30 00 please' })
    expect(r.trailers['x-dlp'] ?? r.headers['x-dlp']).toBe('preset=m; masked=1; tokenized=0; hashed=0; redacted=0; rules=igw-dlp-core@1.2.12')
  })

  it('a block preset refuses the export', async () => {
    const r = await request(`${proxy.url}/b/export`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(403)
    expect(text).toContain('DLP_BLOCKED')
    expect(text).not.toContain('3704')
  })
})
