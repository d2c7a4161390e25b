// DLP sweep 22b: values in percent-encoded URLs and form data left readable, and e-mail lists
// scanned in quadratic time. Real proxy (worker threads) with a real node:http backend and undici
// clients on loopback; the scanner and tokenizer driven directly for tokens and timing.
// Defects fixed (rule pack igw-dlp-core@1.2.7):
// - a %2B number whose spaces are encoded too ("%2B1%20415%20555%200100"; a form body's "+" and
//   %28/%29) left readable (only "%2B" followed by digits, "." or "-" was read);
// - a number or address encoded twice ("%252B1…", "jane%2540corp.com": a URL inside a query value)
//   left readable;
// - a number or address right after another escape ("%3D%2B1…", "%2C%2B1…" in a list,
//   "next=%2Fu%3Femail%3Djane%40corp.com": a login redirect) left readable;
// - e-mail checks read on past the address to the end of the value (the local part's ".." check)
//   or back to the previous blank (the URL test): 1 MiB of addresses took seconds to a minute.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const RULES = `rules=${pack.name}@${pack.version}`

const RECORDS = [
  { id: 1, link: 'https://crm.example/c?tel=%2B1%20415%20555%200100&src=export' },
  { id: 2, form: 'name=ada&tel=%2B1+%28415%29+555-0101&plan=pro' },
  { id: 3, link: 'https://sso.example/login?next=https%3A%2F%2Fcrm.example%2Fdial%3Fto%3D%252B442079460018' },
  { id: 4, form: 'to=%2B14155550102%2C%2B12125550199' },
  { id: 5, link: 'https://sso.example/login?next=%2Fu%3Femail%3Djane.doe%40corp.com%26tab%3D1' },
  { id: 6, link: 'https://sso.example/login?next=https%3A%2F%2Fcrm.example%2Fu%3Fe%3Dbob%2540corp.org' },
  { id: 7, link: 'https://sso.example/login?next=%2Fusers%2Fzoe%40corp.net%2Fedit' },
  // stay as they are: userinfo of the inner URL, an invalid number, a name that is not an address
  { id: 8, link: 'https://sso.example/login?next=https%3A%2F%2Fdeploy%40git.example.com%2Frepo', form: 'x=%2B1%20415%20555%20010', path: 'next=%2Fu%2Fjane%40corp.com_old%2Fedit' },
]
const expected = [
  { id: 1, link: 'https://crm.example/c?tel=%2B1*******0100&src=export' },
  { id: 2, form: 'name=ada&tel=%2B1*******0101&plan=pro' },
  { id: 3, link: 'https://sso.example/login?next=https%3A%2F%2Fcrm.example%2Fdial%3Fto%3D%252B44*******0018' },
  { id: 4, form: 'to=%2B1*******0102%2C%2B1*******0199' },
  { id: 5, link: 'https://sso.example/login?next=%2Fu%3Femail%3Dj***%40corp.com%26tab%3D1' },
  { id: 6, link: 'https://sso.example/login?next=https%3A%2F%2Fcrm.example%2Fu%3Fe%3Db***%2540corp.org' },
  { id: 7, link: 'https://sso.example/login?next=%2Fusers%2Fz***%40corp.net%2Fedit' },
  RECORDS[7],
]
const SECRETS = ['555%200100', '555-0101', '2079460018', '4155550102', '2125550199', 'jane.doe', 'bob%2540', 'zoe%40']
const CSV = 'id,callback\n1,https://crm.example/c?tel=%2B1%20415%20555%200100\n2,https://sso.example/l?next=%2Fu%3Femail%3Djane.doe%40corp.com\n'

describe('dlp: values in percent-encoded URLs and form data (sweep 22b)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      if (req.url === '/export/records.ndjson') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        return res.end(RECORDS.map((r) => JSON.stringify(r)).join('\n') + '\n')
      }
      if (req.url === '/export/callbacks.csv') {
        res.writeHead(200, { 'content-type': 'text/csv; charset=utf-8' })
        return res.end(CSV)
      }
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"error":"not found"}')
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: {
        keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-dlp-22b-')), 'keyring.json') },
        presets: { m: { email: 'mask', phone_e164: 'mask', ssn_us: 'redact', credit_card: 'redact', iban: 'redact' } },
        policy: { allowedPresets: ['m'] },
      },
      routes: [{ name: 'exports', upstream: raw.url, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/export/' }] } }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  let ndjson: Promise<{ status: number; text: string; rows: { id: number }[]; dlp: unknown }> | undefined
  const exported = () =>
    (ndjson ??= request(`${proxy.url}/export/records.ndjson`).then(async (r) => {
      const text = await r.body.text()
      return { status: r.statusCode, text, rows: r.statusCode === 200 ? text.trim().split('\n').map((l) => JSON.parse(l) as { id: number }) : [], dlp: r.headers['x-dlp'] }
    }))
  const rows = async (...ids: number[]) => (await exported()).rows.filter((x) => ids.includes(x.id))
  const want = (...ids: number[]) => expected.filter((x) => ids.includes(x!.id))

  it('masks a %2B number with encoded spaces (%20), or a form body\'s "+" and %28/%29, keeping its encoding', async () => {
    expect(await rows(1, 2)).toEqual(want(1, 2))
  })
  it('masks a number encoded twice (%252B) and one right after another escape (%3D, %2C)', async () => {
    expect(await rows(3, 4)).toEqual(want(3, 4))
  })
  it('masks an address inside an encoded URL (%3D…%40), encoded twice (%2540) or as a path segment (%2F…%2F)', async () => {
    expect(await rows(5, 6, 7)).toEqual(want(5, 6, 7))
  })
  it('leaves the inner URL\'s userinfo, an invalid number and a longer name alone', async () => {
    expect(await rows(8)).toEqual(want(8))
  })
  it('the whole export: nothing readable leaks; counts and rule pack in x-dlp', async () => {
    const r = await exported()
    expect(r.status, r.text).toBe(200)
    expect(r.rows).toEqual(expected)
    for (const v of SECRETS) expect({ v, leaked: r.text.includes(v) }).toEqual({ v, leaked: false })
    expect(r.dlp).toBe(`preset=m; masked=8; tokenized=0; hashed=0; redacted=0; ${RULES}`)
  })
  it('a CSV export: the same in a cell', async () => {
    const r = await request(`${proxy.url}/export/callbacks.csv`)
    const text = await r.body.text()
    expect(r.statusCode, text).toBe(200)
    expect(text).toBe('id,callback\n1,https://crm.example/c?tel=%2B1*******0100\n2,https://sso.example/l?next=%2Fu%3Femail%3Dj***%40corp.com\n')
  })
})

const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', created: '2026-01-01T00:00:00.000Z', secret: new Uint8Array(32).fill(9) }]]) })

describe('tokens and scan time of encoded and listed addresses (sweep 22b)', () => {
  it('an address encoded twice gets the token of the address as written with "@"', () => {
    const scanner = new ExportScanner(pack, compileActions(pack, { email: 'tokenize' }), tokenizer)
    const twice = scanner.visit('?next=%2Fu%3Fe%3Djane%2540corp.com', 0) as string
    const plain = scanner.visit('jane@corp.com', 0)
    expect(plain).toBe(tokenizer.tokenize('email', 'jane@corp.com'))
    expect(twice).toBe(`?next=%2Fu%3Fe%3D${plain}`)
  })

  // 16× the input must cost about 16× the time (quadratic: 256×); best of five, as scanner-linear,
  // and at least 2 ms for the small one (a loaded machine's noise is not a ratio).
  function best(value: string): number {
    let min = Number.POSITIVE_INFINITY
    for (let i = 0; i < 5; i++) {
      const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask' }), undefined)
      const t0 = performance.now()
      scanner.visit(value, 0)
      min = Math.min(min, performance.now() - t0)
    }
    return min
  }
  for (const [name, unit, kib] of [
    ['addresses separated by spaces', 'jane.doe@example.com ', 16],
    ['addresses joined by commas', 'jane.doe@example.com,', 8],
    ['%40-encoded addresses joined by commas', 'jane%40example.com,', 8],
  ] as const) {
    it(`a list of ${name} is scanned in linear time`, () => {
      const small = unit.repeat(Math.floor((kib * 1024) / unit.length))
      const large = unit.repeat(Math.floor((16 * kib * 1024) / unit.length))
      best(small) // warm up the JIT and the regexes
      const ratio = best(large) / Math.max(best(small), 2)
      expect(ratio, `${16 * kib} KiB ÷ ${kib} KiB time`).toBeLessThan(64)
    })
  }
})
