// DLP sweep 19b: phone numbers of other countries under a phone field name, written without
// their "+" (an MSISDN, the form telecom systems store) or after the "00" international prefix.
// Real proxy (worker threads), a real node:http backend, undici clients, loopback only.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const NDJSON = [
  '{"id":1,"msisdn":"447911123456"}', // UK mobile, E.164 digits
  '{"id":2,"msisdn":4915123456789}', // German mobile, as a JSON number
  '{"id":3,"phone":"0033 6 12 34 56 78"}', // French mobile after the 00 prefix
  '{"id":4,"mobile":"61 412 345 678"}', // Australian mobile, grouped, no +
  '{"id":5,"phone":"(202) 555-0143"}', // national (phoneRegion US): as before
  '{"id":6,"phoneVerifiedAt":1732647234000,"phone_count":12,"order":"447911123456"}', // not phones
].join('\n') + '\n'
const CSV = 'id,msisdn,note\n1,447911123456,ok\n2,0033612345678,ok\n'
const SECRETS = ['7911123456', '5123456789', '6 12 34 56 78', '412 345 678', '555-0143', '0033612345678']

describe('dlp: international numbers under phone fields (sweep 19b)', () => {
  let raw: RawBackend
  let proxy: TestProxy

  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const csv = req.url!.endsWith('.csv')
      res.writeHead(200, { 'content-type': csv ? 'text/csv' : 'application/x-ndjson' })
      res.end(csv ? CSV : NDJSON)
    })
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-dlp-19b-phone-')), 'keyring.json') }, presets: { m: { phone_e164: 'mask' } }, policy: { enabled: false } },
      routes: [{ name: 'exports', upstream: raw.url, type: 'http', timeouts: { totalMs: 0 }, filters: [{ name: 'dlp', preset: 'm', exports: { paths: [{ prefix: '/export/' }] } }] }],
    } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  it('an MSISDN, a number after 00, a grouped number without + are masked as phones; timestamps and order numbers are not', async () => {
    const r = await request(`${proxy.url}/export/subscribers.ndjson`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    const rows = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(rows).toEqual([
      { id: 1, msisdn: '+44*******3456' },
      { id: 2, msisdn: '+49*******6789' },
      { id: 3, phone: '+33*******5678' },
      { id: 4, mobile: '+61*******5678' },
      { id: 5, phone: '+1*******0143' },
      { id: 6, phoneVerifiedAt: 1732647234000, phone_count: 12, order: '447911123456' },
    ])
    expect(r.headers['x-dlp']).toBe('preset=m; masked=5; tokenized=0; hashed=0; redacted=0; rules=igw-dlp-core@1.2.12')
  })

  it('the same under a CSV header', async () => {
    const r = await request(`${proxy.url}/export/subscribers.csv`)
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(text).toBe('id,msisdn,note\n1,+44*******3456,ok\n2,+33*******5678,ok\n')
    for (const v of SECRETS) expect({ v, leaked: text.includes(v) }).toEqual({ v, leaked: false })
  })
})
