// DLP sweep 30j: a number under a field that names a sensitive type was read as written. A Java
// backend (Jackson writes a double with an exponent: `1.23456789E8`) or a Python one (a float
// column: `123456789.0`) sent SSNs, card and phone numbers that no rule read as such, while every
// client's JSON parser reads them back as the integers they are: an SSN under `tokenize_strict`
// (block) left readable with a 200. Now such a number is read as the integer it stands for.
// Real proxy (worker thread), a real node:http backend and undici on 127.0.0.1.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

// As Jackson and Python's json module write doubles; each is 123456789, 4111111111111111 or 4155550143.
const JACKSON = '{"id":7,"ssn":1.23456789E8,"cardNumber":4.111111111111111E15,"phone":4.155550143E9}'
const PYTHON = '{"id":7.0,"ssn":123456789.0,"cardNumber":4111111111111111.0,"phone":4155550143.0}'
const BODIES: Record<string, [string, string]> = {
  '/export/jackson.json': ['application/json', JACKSON],
  '/export/python.json': ['application/json', PYTHON],
  '/export/jackson.ndjson': ['application/x-ndjson', `${JACKSON}\n${JACKSON}\n`],
  // not integers, or not under a field of a type: copied as they are
  '/export/amounts.json': ['application/json', '{"amount":1.23456789E8,"phone":4155550143.5,"ssn":1e999,"ratio":4.111111111111111E15}'],
}

describe('numbers with a fraction or an exponent under a sensitive field (sweep 30j)', () => {
  let raw: RawBackend
  let mask: TestProxy
  let strict: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-30j-'))
  const proxyFor = (preset: string) =>
    startTestProxy({
      dlp: { keyring: { file: join(dir, 'ring.json') }, presets: { all_masked: { ssn_us: 'mask', credit_card: 'mask', phone_e164: 'mask' } }, policy: { enabled: false } } as never,
      routes: [{ name: 'api', upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset, exports: { paths: [{ prefix: '/export/' }] } }] as never }],
    })
  beforeAll(async () => {
    raw = await startRawBackend((req, res) => {
      const [type, body] = BODIES[req.url!]!
      res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
    ;[mask, strict] = await Promise.all([proxyFor('all_masked'), proxyFor('tokenize_strict')])
  })
  afterAll(async () => {
    await Promise.all([mask?.close(), strict?.close()])
    await raw?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const get = async (proxy: TestProxy, path: string) => {
    const r = await request(`${proxy.url}${path}`)
    return { status: r.statusCode, headers: r.headers, text: await r.body.text() }
  }

  it.each(['/export/jackson.json', '/export/python.json'])('%s: each value is masked as its integer is', async (path) => {
    const r = await get(mask, path)
    expect(r.status).toBe(200)
    expect(JSON.parse(r.text)).toEqual({ id: 7, ssn: '***-**-6789', cardNumber: '************1111', phone: '+1*******0143' })
    expect(String(r.headers['x-dlp'])).toContain('masked=3')
  })

  it('an NDJSON export of them is masked record by record', async () => {
    const r = await get(mask, '/export/jackson.ndjson')
    expect(r.status).toBe(200)
    const records = r.text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(records).toHaveLength(2)
    for (const rec of records) expect(rec).toEqual({ id: 7, ssn: '***-**-6789', cardNumber: '************1111', phone: '+1*******0143' })
  })

  it.each(['/export/jackson.json', '/export/python.json', '/export/jackson.ndjson'])('%s: an SSN a preset blocks is refused, not sent', async (path) => {
    const r = await get(strict, path)
    expect(r.status).toBe(403)
    expect(r.text).not.toMatch(/1\.23456789E8|123456789\.0/)
    expect(JSON.parse(r.text).errors[0].extensions).toMatchObject({ code: 'DLP_BLOCKED', type: 'ssn_us' })
  })

  it('amounts, fractions and numbers of no sensitive field are copied digit for digit', async () => {
    const r = await get(mask, '/export/amounts.json')
    expect(r.status).toBe(200)
    expect(r.text).toContain('"amount":1.23456789E8')
    expect(r.text).toContain('"ssn":1e999')
    expect(r.text).toContain('"ratio":4.111111111111111E15')
  })
})
