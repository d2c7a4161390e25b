// DLP sweep 25b: object keys are scanned (maps keyed by e-mail), and a mask maps many keys to
// one: {"jane@x.com":1,"jdoe@x.com":2} became {"j***@x.com":1,"j***@x.com":2}, and a client's
// JSON.parse kept only the last entry — data silently lost. A rewritten key that repeats one
// already rewritten in the same object now gets "#2", "#3"… appended. Driven through
// ExportSession, as the filter drives it, at several splits of the transfer.
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ExportSession, type ExportFormat } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(randomBytes(32)), created: '' }]]) })

async function exportOf(format: ExportFormat, text: string, chunk: number, action = 'mask'): Promise<string> {
  const scanner = new ExportScanner(pack, compileActions(pack, { email: action }), tokenizer)
  const session = new ExportSession(scanner, { format, maxTokenChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const bytes = Buffer.from(text)
  let out = ''
  for (let i = 0; i < bytes.length; i += chunk) out += (await session.write(bytes.subarray(i, i + chunk)))?.toString() ?? ''
  out += (await session.end())?.toString() ?? ''
  expect(session.stop).toBeUndefined()
  return out
}

describe('masked map keys stay distinct (sweep 25b)', () => {
  const doc = { byEmail: { 'jane@x.com': 1, 'jdoe@x.com': 2, 'joe@x.com': 3, 'ann@x.com': 4 }, other: { 'jill@x.com': 5 } }

  it('JSON: every entry survives a JSON.parse, whatever the chunks', async () => {
    for (const chunk of [1, 7, 1 << 20]) {
      const out = JSON.parse(await exportOf('json', JSON.stringify(doc), chunk)) as typeof doc
      expect(out).toEqual({
        byEmail: { 'j***@x.com': 1, 'j***@x.com#2': 2, 'j***@x.com#3': 3, 'a***@x.com': 4 },
        // another object: its keys are its own
        other: { 'j***@x.com': 5 },
      })
    }
  })

  it('NDJSON: each record starts afresh; nested maps too', async () => {
    const rec = { m: { 'jane@x.com': { 'jo@y.org': 1, 'jim@y.org': 2 }, 'jdoe@x.com': {} } }
    const text = `${JSON.stringify(rec)}\n${JSON.stringify(rec)}\n`
    const lines = (await exportOf('ndjson', text, 5)).split('\n').filter((l) => l !== '')
    expect(lines.map((l) => JSON.parse(l) as unknown)).toEqual(Array(2).fill({ m: { 'j***@x.com': { 'j***@y.org': 1, 'j***@y.org#2': 2 }, 'j***@x.com#2': {} } }))
  })

  it('redacted keys too; tokens differ by value and are left as they are', async () => {
    const text = JSON.stringify(doc.byEmail)
    expect(Object.keys(JSON.parse(await exportOf('json', text, 3, 'redact')) as object)).toEqual(['[redacted:email]', '[redacted:email]#2', '[redacted:email]#3', '[redacted:email]#4'])
    const tokens = Object.keys(JSON.parse(await exportOf('json', text, 3, 'tokenize')) as object)
    expect(tokens).toHaveLength(4)
    expect(tokens.every((k) => /^tok_email_k1_[\w-]+$/.test(k))).toBe(true)
  })

  it('a value equal to a masked key is not a key: left alone', async () => {
    const out = JSON.parse(await exportOf('json', '{"a":"jane@x.com","b":"jdoe@x.com"}', 4)) as object
    expect(out).toEqual({ a: 'j***@x.com', b: 'j***@x.com' })
  })
})
