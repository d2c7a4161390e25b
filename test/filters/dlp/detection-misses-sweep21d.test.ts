// DLP sweep 21d: detection misses and a false alarm on export responses, and two media types
// refused as uninspectable. Real proxy (worker threads) with the real export policy (Rego
// bundle on opa-wasm), a real node:http backend and undici clients, loopback only.
// Defects fixed:
// - a %2B-encoded number in a URL ("?tel=%2B14155550123") left readable;
// - an address whose local part starts with "_" ("_ops@example.com") left readable;
// - a number after the 00 international prefix ("call 0044 20 7946 0018") left readable under
//   phoneRegion US (whose prefix is 011: read nationally, invalid);
// - "Add::Bad" (hex letters around "::", which node:net takes) masked as an IPv6 address;
// - text/json and text/tab-separated-values exports refused as uninspectable (403).
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const RULES = `rules=${pack.name}@${pack.version}`

const RECORDS = [
  { id: 1, link: 'https://crm.example/c?tel=%2B14155550123&src=export' },
  { id: 2, link: 'https://crm.example/dial?to=%2b442079460018' },
  { id: 3, note: 'escalate to _ops@example.com today', email: '_billing@example.org' },
  { id: 4, note: 'call 0044 20 7946 0018 after 5pm' },
  { id: 5, note: 'mobile 00447911123456' },
  { id: 6, note: 'see Add::Bad and Cafe::Face in the C++ docs', ip: 'fe80::1' },
  { id: 7, note: 'from 2001:db8::Dead:Beef via Fe80::1' },
]
const SECRETS = ['4155550123', '2079460018', '_ops@', '_billing@', '7946 0018', '7911123456', 'fe80::1', 'Dead:Beef', 'Fe80::1']
const TSV = 'id\temail\tphone\tnote\n1\tjane@example.com\t+1 415 555 0143\tcall 0044 20 7946 0018\n2\t_ops@example.com\t(212) 555-0199\tok\n'

describe('dlp detection misses (sweep 21d)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      if (req.url === '/export/records.ndjson') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' })
        return res.end(RECORDS.map((r) => JSON.stringify(r)).join('\n') + '\n')
      }
      if (req.url === '/export/records.json') {
        res.writeHead(200, { 'content-type': 'text/json; charset=utf-8' })
        return res.end(JSON.stringify({ rows: RECORDS }))
      }
      if (req.url === '/export/contacts.tsv') {
        res.writeHead(200, { 'content-type': 'text/tab-separated-values; charset=utf-8' })
        return res.end(TSV)
      }
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end('{"error":"not found"}')
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: {
        keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-dlp-21d-')), 'keyring.json') },
        presets: { m: { email: 'mask', phone_e164: 'mask', ipv6: 'mask', ssn_us: 'redact', credit_card: 'redact', iban: 'redact' } },
        policy: { allowedPresets: ['m'] },
      },
      routes: [{ name: 'exports', upstream: raw.url, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/export/' }] } }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  const expected = [
    { id: 1, link: 'https://crm.example/c?tel=%2B1*******0123&src=export' },
    { id: 2, link: 'https://crm.example/dial?to=%2b44*******0018' },
    { id: 3, note: 'escalate to _***@example.com today', email: '_***@example.org' },
    { id: 4, note: 'call +44*******0018 after 5pm' },
    { id: 5, note: 'mobile +44*******3456' },
    { id: 6, note: 'see Add::Bad and Cafe::Face in the C++ docs', ip: 'fe80:0:*' },
    { id: 7, note: 'from 2001:db8:* via Fe80:0:*' },
  ]

  // One NDJSON export, read once; each defect checks its own records.
  let ndjson: Promise<{ status: number; text: string; rows: unknown[]; dlp: unknown }> | undefined
  const exported = () =>
    (ndjson ??= request(`${proxy.url}/export/records.ndjson`).then(async (r) => {
      const text = await r.body.text()
      return { status: r.statusCode, text, rows: r.statusCode === 200 ? text.trim().split('\n').map((l) => JSON.parse(l) as unknown) : [], dlp: r.headers['x-dlp'] }
    }))
  const rows = async (...ids: number[]) => (await exported()).rows.filter((x) => ids.includes((x as { id: number }).id))
  const want = (...ids: number[]) => expected.filter((x) => ids.includes(x.id))

  it('masks a %2B-encoded number in a URL, keeping its encoding', async () => {
    expect(await rows(1, 2)).toEqual(want(1, 2))
  })
  it('masks an address whose local part starts with "_", in text and under an email field', async () => {
    expect(await rows(3)).toEqual(want(3))
  })
  it('masks a number after the 00 international prefix under phoneRegion US', async () => {
    expect(await rows(4, 5)).toEqual(want(4, 5))
  })
  it('leaves capitalized hex words around "::" (Add::Bad) alone; addresses with digits are still masked', async () => {
    expect(await rows(6, 7)).toEqual(want(6, 7))
  })
  it('the whole export: nothing readable leaks, counts and rule pack in x-dlp', async () => {
    const r = await exported()
    expect(r.status, r.text).toBe(200)
    expect(r.rows).toEqual(expected)
    for (const v of SECRETS) expect({ v, leaked: r.text.includes(v) }).toEqual({ v, leaked: false })
    expect(r.dlp).toBe(`preset=m; masked=9; tokenized=0; hashed=0; redacted=0; ${RULES}`)
  })

  it('reads a text/json export as JSON', async () => {
    const r = await request(`${proxy.url}/export/records.json`)
    const text = await r.body.text()
    expect(r.statusCode, text).toBe(200)
    expect(JSON.parse(text)).toEqual({ rows: expected })
    expect(r.headers['x-dlp']).toBe(`preset=m; masked=9; tokenized=0; hashed=0; redacted=0; ${RULES}`)
  })

  it('reads a text/tab-separated-values export as tab-delimited rows, header names as field hints', async () => {
    const r = await request(`${proxy.url}/export/contacts.tsv`)
    const text = await r.body.text()
    expect(r.statusCode, text).toBe(200)
    expect(text).toBe('id\temail\tphone\tnote\n1\tj***@example.com\t+1*******0143\tcall +44*******0018\n2\t_***@example.com\t+1*******0199\tok\n')
    expect(r.headers['x-dlp']).toBe(`preset=m; masked=5; tokenized=0; hashed=0; redacted=0; ${RULES}`)
  })
})
