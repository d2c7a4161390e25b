// The byte-preserving JSON/NDJSON rewriter and the CSV engine, without sockets.
import { describe, expect, it } from 'vitest'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { jsonString, JsonRewriter, JsonSyntaxError } from '../../../filters/dlp/json-rewriter.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'

const upper = { visit: (s: string, hint: number) => (s.includes('@') ? `${s.toUpperCase()}#${hint}` : undefined) }

function rewrite(text: string, opts: { multi?: boolean; chunk?: number; scope?: string[][] } = {}): string {
  const rw = new JsonRewriter(upper, { multi: opts.multi ?? false, hintOf: (k) => k.length, maxTokenChars: 1 << 16, checkpoint: () => true, scope: opts.scope ? { paths: opts.scope } : undefined })
  const step = opts.chunk ?? text.length
  let out = ''
  for (let i = 0; i < text.length; i += step) {
    rw.write(text.slice(i, i + step))
    out += rw.take()
  }
  rw.end()
  return out + rw.take()
}

const DOC = '{ "id" : 12345678901234567890, "f": -1.50e+10, "ok": true, "none": null,\n  "mail": "a@b.c", "list": ["x@y.z", {"deep": "q\\"@\\u0041"}], "plain": "hello" }'

describe('jsonString', () => {
  it('is JSON.stringify for strings: quotes, backslashes, control characters, lone and paired surrogates', () => {
    const alphabet = ['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\u0000', '\u001f', '\u007f', 'é', '€', '\u2028', '\ud83d', '\ude00', '\ud83d\ude00', '*', '@']
    let seed = 7
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
    for (let n = 0; n < 5000; n++) {
      let s = ''
      const len = Math.floor(rnd() * 12)
      for (let k = 0; k < len; k++) s += alphabet[Math.floor(rnd() * alphabet.length)]
      expect(jsonString(s)).toBe(JSON.stringify(s))
    }
    expect(jsonString('')).toBe('""')
  })
})

describe('JSON rewriter', () => {
  it('rewrites string values only and keeps every other byte (numbers, spacing, key order)', () => {
    expect(rewrite(DOC)).toBe(DOC.replace('"a@b.c"', '"A@B.C#4"').replace('"x@y.z"', '"X@Y.Z#4"').replace('"q\\"@\\u0041"', '"Q\\"@A#4"'))
    expect(rewrite('{"n": 1e400, "s": "no at sign"}')).toBe('{"n": 1e400, "s": "no at sign"}')
  })
  it('gives the same output however the input is split (every chunk size 1..40)', () => {
    const want = rewrite(DOC)
    for (let chunk = 1; chunk <= 40; chunk++) expect(rewrite(DOC, { chunk })).toBe(want)
  })
  it('deferred replacements (batched tokens) are completed by flush() before output is taken', () => {
    const pending: { value: string; src: string }[] = []
    let flushes = 0
    const visitor = {
      visit: (s: string) => {
        if (!s.includes('@')) return undefined
        const p = { value: '', src: s }
        pending.push(p)
        return p
      },
      flush: () => {
        flushes++
        for (const p of pending.splice(0)) p.value = `tok_${p.src.length}`
      },
    }
    const nd = '{"e":"a@b.c","n":1}\n{"e":"plain"}\n{"e":"xy@b.c","f":["q@r.s"]}\n'
    for (const chunk of [1, 5, 17, nd.length]) {
      flushes = 0
      const rw = new JsonRewriter(visitor, { multi: true, hintOf: () => 0, maxTokenChars: 1 << 16, checkpoint: () => true })
      let out = ''
      for (let i = 0; i < nd.length; i += chunk) {
        rw.write(nd.slice(i, i + chunk))
        out += rw.take()
      }
      rw.end()
      out += rw.take()
      expect(out).toBe('{"e":"tok_5","n":1}\n{"e":"plain"}\n{"e":"tok_6","f":["tok_5"]}\n')
      expect(flushes).toBeGreaterThan(0)
    }
  })
  it('keys remembered by position never stand in for a different key (prefixes, escapes, nesting)', () => {
    // hintOf is the key length: a stale key memo would show up as a wrong hint
    const nd = [
      '{"mail":"a@b.c","x":{"mail":"n@b.c"}}',
      '{"mailbox":"a@b.c","x":{"mai":"n@b.c"}}',
      '{"mail":"a@b.c","x":{"ma\\"il":"n@b.c"}}',
      '{"mail":"a@b.c","x":{"mail":"n@b.c","mail":"m@b.c"}}',
      '{"m\\u0061il":"a@b.c","x":[{"mail":"n@b.c"},{"mail2":"o@b.c"}]}',
    ].join('\n') + '\n'
    const want = [
      '{"mail":"A@B.C#4","x":{"mail":"N@B.C#4"}}',
      '{"mailbox":"A@B.C#7","x":{"mai":"N@B.C#3"}}',
      '{"mail":"A@B.C#4","x":{"ma\\"il":"N@B.C#5"}}',
      '{"mail":"A@B.C#4","x":{"mail":"N@B.C#4","mail":"M@B.C#4"}}',
      '{"m\\u0061il":"A@B.C#4","x":[{"mail":"N@B.C#4"},{"mail2":"O@B.C#5"}]}',
    ].join('\n') + '\n'
    for (const chunk of [1, 3, 8, nd.length]) expect(rewrite(nd, { multi: true, chunk })).toBe(want)
  })
  it('NDJSON: a sequence of values, released record by record', () => {
    const nd = '{"e":"a@b.c"}\n{"e":"plain"}\n"top@level.x"\n[1,2]\n'
    expect(rewrite(nd, { multi: true, chunk: 3 })).toBe('{"e":"A@B.C#1"}\n{"e":"plain"}\n"TOP@LEVEL.X#0"\n[1,2]\n')
  })
  it('response paths scope the rewrite (arrays are transparent; errors listed explicitly)', () => {
    const doc = '{"data":{"entities":[{"email":"a@b.c"}],"me":{"email":"me@b.c"}},"errors":[{"message":"m@x.y"}]}'
    expect(rewrite(doc, { scope: [['data', 'entities'], ['errors']] })).toBe('{"data":{"entities":[{"email":"A@B.C#5"}],"me":{"email":"me@b.c"}},"errors":[{"message":"M@X.Y#7"}]}')
  })
  it('accepts exactly what JSON.parse accepts (random mutations of valid documents)', () => {
    let seed = 7
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
    // No control characters: raw ones inside strings are tolerated on purpose (they hide nothing).
    const alphabet = '{}[]:,"\\ 0123456789-+.eEtrufalsn@x'
    let checked = 0
    for (let i = 0; i < 3000; i++) {
      let s = DOC.replace('\n', ' ')
      const edits = 1 + Math.floor(rnd() * 3)
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rnd() * s.length)
        const op = rnd()
        const ch = alphabet[Math.floor(rnd() * alphabet.length)]!
        s = op < 0.4 ? s.slice(0, at) + s.slice(at + 1) : op < 0.7 ? s.slice(0, at) + ch + s.slice(at) : s.slice(0, at) + ch + s.slice(at + 1)
      }
      let valid = true
      try {
        JSON.parse(s)
      } catch {
        valid = false
      }
      let ours = true
      try {
        rewrite(s, { chunk: 1 + (i % 17) })
      } catch (err) {
        expect(err).toBeInstanceOf(JsonSyntaxError)
        ours = false
      }
      expect({ s, ours }).toEqual({ s, ours: valid })
      checked++
    }
    expect(checked).toBeGreaterThan(2000)
  })
  it('a bare value outside strings is not waved through as a number', () => {
    expect(() => rewrite('{"ssn": 123-45-6789}')).toThrow(/not a JSON value/)
    expect(() => rewrite('{"a":1}{"b":2}')).toThrow(JsonSyntaxError)
  })
  it('error messages give positions, never input bytes', () => {
    try {
      rewrite('{"secret": "jane@example.com" x}')
    } catch (err) {
      expect((err as Error).message).toMatch(/at character \d+/)
      expect((err as Error).message).not.toContain('jane')
    }
  })
  it('a string longer than the limit is refused', () => {
    const rw = new JsonRewriter(upper, { multi: false, hintOf: () => 0, maxTokenChars: 100, checkpoint: () => true })
    expect(() => rw.write(`{"a":"${'x'.repeat(200)}`)).toThrow(/longer than 100/)
  })
})

describe('export sessions', () => {
  const pack = RulePack.load(BUILTIN_RULE_PACK)
  const session = (format: 'csv' | 'ndjson' | 'json', preset: Record<string, string>) =>
    new ExportSession(new ExportScanner(pack, compileActions(pack, preset), undefined), { format, maxTokenChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge: undefined })
  async function run(s: ExportSession, text: string, chunk = 7): Promise<string> {
    let out = ''
    const b = Buffer.from(text)
    for (let i = 0; i < b.length; i += chunk) out += (await s.write(b.subarray(i, i + chunk)))?.toString() ?? ''
    return out + ((await s.end())?.toString() ?? '')
  }

  it('CSV: quoting and embedded newlines survive; header names hint the columns', async () => {
    const csv = 'id,email,note,ssn\r\n1,jane@example.com,"line one\r\nand ""quoted"" +12025550123",123456789\r\n2,x,plain,n/a\r\n'
    const out = await run(session('csv', { email: 'mask', phone_e164: 'mask', ssn_us: 'redact' }), csv)
    expect(out).toBe('id,email,note,ssn\r\n1,j***@example.com,"line one\r\nand ""quoted"" +1*******0123",[redacted:ssn_us]\r\n2,x,plain,n/a\r\n')
  })
  it('CSV without a final line ending keeps it that way; malformed CSV stops the export', async () => {
    expect(await run(session('csv', { email: 'mask' }), 'a,email\n1,jane@example.com')).toBe('a,email\n1,j***@example.com')
    const s = session('csv', { email: 'mask' })
    await run(s, 'a,b\n1,"unterminated\n')
    expect(s.stop?.kind).toBe('malformed')
    expect(s.stop?.message).toMatch(/not valid CSV/)
  })
  it('a block drops the record that holds the value and everything after it', async () => {
    const s = session('ndjson', { email: 'mask', ssn_us: 'block' })
    const out = await run(s, '{"e":"jane@example.com"}\n{"e":"x","ssn":"123-45-6789"}\n{"e":"john@example.com"}\n', 5)
    expect(out).toBe('{"e":"j***@example.com"}')
    expect(s.stop).toMatchObject({ kind: 'block', type: 'ssn_us', count: 1, rule: 'ssn_us.field@1.2.12' })
  })
  it('the policy is asked when an unprotected high-risk type first appears, before its record leaves', async () => {
    const asked: number[] = []
    const s = new ExportSession(new ExportScanner(pack, compileActions(pack, { email: 'mask' }), undefined), {
      format: 'ndjson',
      maxTokenChars: 1 << 20,
      csvHeader: true,
      csvDelimiter: ',',
      judge: (sc) => (asked.push(sc.detected), { allow: false, reason: 'high-risk values would leave without tokenization: credit_card' }),
    })
    const out = await run(s, '{"e":"jane@example.com"}\n{"card":"4111 1111 1111 1111"}\n{"e":"a@example.com"}\n')
    expect(out).toBe('{"e":"j***@example.com"}')
    expect(asked).toHaveLength(1)
    expect(s.stop).toEqual({ kind: 'policy', message: 'high-risk values would leave without tokenization: credit_card' })
  })
})
