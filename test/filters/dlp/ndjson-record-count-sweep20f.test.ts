// DLP sweep 20f: an NDJSON record over the bound (maxJsonBytes) that arrived whole in one write
// was counted as a record before it was refused: the export's `records` (the NDJSON error
// record's extensions.records, the audit line) said one more record was delivered than was, and
// the error named another position than when the same record came in pieces. Driven through
// ExportSession, as the filter drives it, at every split of the transfer.
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(randomBytes(32)), created: '' }]]) })

async function exportOf(text: string, chunk: number): Promise<{ out: string; records: number; message: string | undefined }> {
  const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask' }), tokenizer)
  const session = new ExportSession(scanner, { format: 'ndjson', maxTokenChars: 1 << 20, maxRecordChars: 200, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const bytes = Buffer.from(text)
  let out = ''
  for (let i = 0; i < bytes.length; i += chunk) out += (await session.write(bytes.subarray(i, i + chunk)))?.toString() ?? ''
  out += (await session.end())?.toString() ?? ''
  return { out, records: session.records, message: session.stop?.message }
}

describe('NDJSON record over the bound (sweep 20f)', () => {
  const small = (i: number) => `{"id":${i},"email":"user${i}@example.com"}\n`
  const long = `${JSON.stringify({ id: 3, email: 'jane@corp.com', note: 'n'.repeat(400) })}\n`
  const text = small(1) + small(2) + long + small(4)

  it('is refused uncounted, at the same position, however the transfer splits it', async () => {
    const whole = await exportOf(text, text.length)
    expect(whole.message).toMatch(/a record longer than 200 characters/)
    // the two records before it were delivered, and only they are counted
    expect(whole.out.split('\n').filter((l) => l !== '')).toHaveLength(2)
    expect(whole.out).not.toContain('user1@')
    expect(whole.records).toBe(2)
    for (const chunk of [1, 3, 17, 64, 200, 500]) {
      const r = await exportOf(text, chunk)
      expect({ chunk, ...r }).toEqual({ chunk, ...whole })
    }
  })

  it('records within the bound are still counted one by one', async () => {
    const r = await exportOf(small(1) + small(2) + small(3), 5)
    expect(r.message).toBeUndefined()
    expect(r.records).toBe(3)
  })
})
