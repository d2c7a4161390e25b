// A strict parser for RFC 9651 Structured Field Lists (the subset RateLimit fields use: Items
// with parameters; inner lists are refused). Written from the RFC's parsing algorithm so the
// tests check the gateway's headers against the grammar, not against its own formatter.

export type BareItem = number | string | boolean | { token: string } | { bytes: string }
export interface SfItem {
  value: BareItem
  params: Map<string, BareItem>
}

class Input {
  s: string
  i = 0
  constructor(s: string) {
    this.s = s
  }
  peek(): string {
    return this.s[this.i] ?? ''
  }
  eof(): boolean {
    return this.i >= this.s.length
  }
  fail(what: string): never {
    throw new Error(`structured field: ${what} at ${this.i} in ${JSON.stringify(this.s)}`)
  }
}

export function parseList(field: string): SfItem[] {
  const inp = new Input(field.replace(/^ +| +$/g, ''))
  const out: SfItem[] = []
  if (inp.eof()) return out
  for (;;) {
    if (inp.peek() === '(') inp.fail('inner lists are not expected here')
    out.push(parseItem(inp))
    while (inp.peek() === ' ' || inp.peek() === '\t') inp.i++
    if (inp.eof()) return out
    if (inp.peek() !== ',') inp.fail('expected ","')
    inp.i++
    while (inp.peek() === ' ' || inp.peek() === '\t') inp.i++
    if (inp.eof()) inp.fail('trailing comma')
  }
}

function parseItem(inp: Input): SfItem {
  const value = parseBare(inp)
  const params = new Map<string, BareItem>()
  while (inp.peek() === ';') {
    inp.i++
    while (inp.peek() === ' ') inp.i++
    const key = parseKey(inp)
    let v: BareItem = true
    if (inp.peek() === '=') {
      inp.i++
      v = parseBare(inp)
    }
    params.set(key, v)
  }
  return { value, params }
}

function parseKey(inp: Input): string {
  if (!/[a-z*]/.test(inp.peek())) inp.fail('expected a key')
  const start = inp.i
  while (/[a-z0-9_\-.*]/.test(inp.peek())) inp.i++
  return inp.s.slice(start, inp.i)
}

function parseBare(inp: Input): BareItem {
  const c = inp.peek()
  if (c === '-' || /[0-9]/.test(c)) return parseNumber(inp)
  if (c === '"') return parseString(inp)
  if (c === ':') {
    const end = inp.s.indexOf(':', inp.i + 1)
    if (end === -1) inp.fail('unterminated byte sequence')
    const b64 = inp.s.slice(inp.i + 1, end)
    if (!/^[A-Za-z0-9+/=]*$/.test(b64)) inp.fail('bad base64')
    inp.i = end + 1
    return { bytes: b64 }
  }
  if (c === '?') {
    const v = inp.s[inp.i + 1]
    if (v !== '0' && v !== '1') inp.fail('bad boolean')
    inp.i += 2
    return v === '1'
  }
  if (/[A-Za-z*]/.test(c)) {
    const start = inp.i
    while (/[!#$%&'*+\-.^_`|~0-9A-Za-z:/]/.test(inp.peek())) inp.i++
    return { token: inp.s.slice(start, inp.i) }
  }
  return inp.fail('expected a bare item')
}

function parseNumber(inp: Input): number {
  const m = /^-?[0-9]{1,15}(\.[0-9]{1,3})?/.exec(inp.s.slice(inp.i))
  if (!m) inp.fail('bad number')
  inp.i += m[0].length
  if (/[0-9]/.test(inp.peek())) inp.fail('number too long')
  return Number(m[0])
}

function parseString(inp: Input): string {
  inp.i++
  let out = ''
  for (;;) {
    if (inp.eof()) inp.fail('unterminated string')
    const c = inp.s[inp.i++]!
    if (c === '\\') {
      const n = inp.s[inp.i++]
      if (n !== '"' && n !== '\\') inp.fail('bad escape')
      out += n
    } else if (c === '"') return out
    else if (c < ' ' || c > '~') inp.fail('non-printable character in string')
    else out += c
  }
}

/** An Integer parameter (throws when it is not one). */
export function intParam(item: SfItem, key: string): number {
  const v = item.params.get(key)
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`parameter ${key} is not an Integer: ${JSON.stringify(v)}`)
  return v
}
