// The charset of an export. The rules read text; most exports are UTF-8, but CSV files from
// Excel and older Java or PHP stacks come in windows-1252 or ISO-8859-x (`text/csv;
// charset=iso-8859-1`). Read as UTF-8, each of their accented letters became U+FFFD and left as
// EF BF BD under the upstream's unchanged charset: "Jörg" reached the client as "J�rg", for
// good. A single-byte charset is decoded as the WHATWG Encoding Standard reads it (what browsers
// and fetch do: iso-8859-1 and us-ascii are windows-1252) and encoded back byte for byte.

/**
 * Charsets whose ASCII characters are single ASCII bytes, as the rules read them. Others
 * (UTF-16 and UTF-32: a NUL beside each character; UTF-7: `+AEA-` for `@`; EBCDIC: digits at
 * 0xF0…) hide every value from the rules while the client decodes them: uninspectable.
 */
const ASCII_CHARSET = /^(?:utf-?8|us-ascii|ascii|iso[-_]?8859-\d{1,2}|latin-?1|l1|(?:windows|cp)-?125\d|ansi_x3\.4-1968)$/

/** A single-byte, ASCII-compatible charset both ways; ASCII bytes stand for themselves. */
export class SingleByteCodec {
  readonly name: string
  readonly #decoder: TextDecoder
  /** Character code → byte, for the characters of bytes 0x80-0xFF. */
  readonly #bytes = new Map<number, number>()

  constructor(label: string) {
    this.#decoder = new TextDecoder(label)
    this.name = this.#decoder.encoding
    const table = this.#decoder.decode(Uint8Array.from({ length: 128 }, (_, i) => 0x80 + i))
    if (table.length !== 128) throw new Error(`${label} is not a single-byte charset`)
    for (let i = 0; i < 128; i++) {
      const c = table.charCodeAt(i)
      if (!this.#bytes.has(c)) this.#bytes.set(c, 0x80 + i)
    }
  }

  /** The bytes as UTF-8 (what the export's engines read); stateless: one byte is one character. */
  toUtf8(chunk: Buffer): Buffer {
    for (let i = 0; i < chunk.length; i++) if (chunk[i]! >= 0x80) return Buffer.from(this.#decoder.decode(chunk), 'utf8')
    return chunk
  }

  /**
   * Text back in this charset. What leaves is the export's own characters, plus the ASCII of
   * masks and tokens; a character the charset lacks (none should come) becomes "?".
   */
  encode(s: string): Buffer {
    const out = Buffer.allocUnsafe(s.length)
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      out[i] = c < 0x80 ? c : (this.#bytes.get(c) ?? 0x3f)
    }
    return out
  }
}

const codecs = new Map<string, SingleByteCodec>()

/**
 * How to read an export in `charset` (the Content-Type parameter, lower-case, unquoted): null
 * for UTF-8 (read as it is, also when none is named), a codec for a single-byte charset,
 * undefined for one DLP cannot read.
 */
export function exportCodec(charset: string | undefined): SingleByteCodec | null | undefined {
  if (charset === undefined || charset === 'utf-8' || charset === 'utf8') return null
  if (!ASCII_CHARSET.test(charset)) return undefined
  // The spellings the pattern allows that WHATWG labels lack: cp-1252, windows1252, latin-1.
  const label = charset.replace(/^(?:windows|cp)-?(125\d)$/, 'windows-$1').replace(/^latin-1$/, 'latin1')
  let codec = codecs.get(label)
  if (codec === undefined) {
    try {
      codec = new SingleByteCodec(label)
    } catch {
      return undefined // no such charset (iso-8859-12): not read as something else
    }
    codecs.set(label, codec)
  }
  return codec
}
