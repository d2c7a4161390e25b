// The scanner runs over every byte of an export; a value is up to maxValueBytes (1 MiB) and a
// rejected candidate must cost work near it, not a walk back through the whole value. The
// retry for a card followed by its CVV searched for the previous space without bound: a 1 MiB
// comma-joined list of phone-like numbers took 14 s (the worker's event loop blocked, the
// watchdog killing it). The shape is checked, not a speed: 16× the input must cost about 16× the
// time (quadratic would be 256×; the bound of 64 leaves room for a loaded machine), best of
// three runs each.
import { describe, expect, it } from 'vitest'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { Tokenizer } from '../../../filters/dlp/tokenizer.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)
const ALL = { email: 'tokenize', phone_e164: 'hash', ssn_us: 'redact', credit_card: 'redact', iban: 'redact', ipv4: 'mask', ipv6: 'mask' } as const
const tokenizer = new Tokenizer({ active: 'k1', keys: new Map([['k1', { id: 'k1', created: '2026-01-01T00:00:00.000Z', secret: new Uint8Array(32).fill(7) }]]) })

function best(value: string): number {
  let min = Number.POSITIVE_INFINITY
  for (let i = 0; i < 3; i++) {
    const scanner = new ExportScanner(pack, compileActions(pack, ALL as never), tokenizer)
    const t0 = performance.now()
    scanner.visit(value, 0)
    min = Math.min(min, performance.now() - t0)
  }
  return min
}

describe('the scanner is linear in a value without spaces', () => {
  for (const [name, unit] of [
    ['phone-like numbers without context', '4155550100,'],
    ['browser versions', 'Chrome/131.0.0.0;'],
    ['Luhn-failing 16-digit numbers', '4111111111111112,'],
  ] as const) {
    it(name, () => {
      const small = unit.repeat(Math.floor(64 * 1024 / unit.length))
      const large = unit.repeat(Math.floor(1024 * 1024 / unit.length))
      best(small) // warm up the JIT and the regexes
      const ratio = best(large) / Math.max(best(small), 1)
      expect(ratio, `1 MiB ÷ 64 KiB time`).toBeLessThan(64)
    })
  }
})
