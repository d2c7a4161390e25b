// DLP sweep 25b: an e-mail field whose local part is quoted ("john doe"@corp.com, RFC 5322)
// was masked to `"***@corp.com`: the opening quote kept as "the first character", the closing
// one masked away. Now both quotes stay around the first character inside them:
// `"j***"@corp.com`. Driven through ExportSession (JSON and CSV), as the filter drives it.
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ExportSession, type ExportFormat } from '../../../filters/dlp/export-session.ts'
import { maskerFor } from '../../../filters/dlp/masks.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', secret: new Uint8Array(randomBytes(32)), created: '' }]]) })

async function exportOf(format: ExportFormat, text: string): Promise<string> {
  const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask' }), tokenizer)
  const session = new ExportSession(scanner, { format, maxTokenChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const out = [await session.write(Buffer.from(text)), await session.end()]
  expect(session.stop).toBeUndefined()
  return Buffer.concat(out.filter((b) => b !== undefined)).toString()
}

describe('a quoted local part is masked whole (sweep 25b)', () => {
  it('JSON field: both quotes kept', async () => {
    const out = JSON.parse(await exportOf('json', JSON.stringify({ email: '"john doe"@corp.com', contact: 'mailto:"Ann Lee"@corp.com' }))) as Record<string, string>
    expect(out).toEqual({ email: '"j***"@corp.com', contact: 'mailto:"A***"@corp.com' })
  })

  it('CSV cell: the same', async () => {
    expect(await exportOf('csv', 'id,email\n1,"""john doe""@corp.com"\n')).toBe('id,email\n1,"""j***""@corp.com"\n')
  })

  it('the mask: quoted, blank-padded, and an unquoted address as before', () => {
    const mask = maskerFor('email')
    expect(mask(' "x"@corp.com ')).toBe(' "x***"@corp.com ')
    expect(mask('"o\'brien"%40corp.com')).toBe('"o***"%40corp.com')
    expect(mask('jane@corp.com')).toBe('j***@corp.com')
  })
})
