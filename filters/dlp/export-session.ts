// One export in flight: bytes in (JSON, NDJSON or CSV) → transformed bytes out, released only
// at record boundaries after the verdict for that record is known (a `block` action, or the
// export policy judging a newly seen high-risk type). Pure of sockets: the filter feeds it
// chunks and decides what to do with its verdict; the tests and the corpus eval drive it directly.
import { isUtf8 } from 'node:buffer'
import { StringDecoder } from 'node:string_decoder'
import { Parser as CsvParser } from 'csv-parse'
import { stringify as csvStringify } from 'csv-stringify/sync'
import type { SingleByteCodec } from './charset.ts'
import { JsonRewriter, JsonSyntaxError, PAIR_NAME, PAIR_NAME_MAX_CHARS, PAIR_VALUE, pairRole, type JsonScope } from './json-rewriter.ts'
import type { RulePack } from './rule-pack.ts'
import { ExportScanner } from './scanner.ts'

export type ExportFormat = 'json' | 'ndjson' | 'csv'

export interface PolicyVerdict {
  allow: boolean
  reason: string
}

/** Why an export stopped. `block`: a block action; `policy`: the policy denied; `malformed`: not parseable. */
export interface StopReason {
  kind: 'block' | 'policy' | 'malformed'
  message: string
  type?: string
  count?: number
  rule?: string
}

export interface SessionOptions {
  format: ExportFormat
  /** A single-byte charset the export is in (read as UTF-8 and written back in it); absent: UTF-8. */
  codec?: SingleByteCodec | undefined
  scope?: JsonScope | undefined
  maxTokenChars: number
  /** NDJSON: longest record held until it is complete (characters; see JsonRewriterOptions). */
  maxRecordChars?: number
  /** CSV: the first record names the columns (their names are field hints). */
  csvHeader: boolean
  csvDelimiter: string
  /** Asked when a high-risk type the preset leaves readable shows up for the first time. */
  judge: ((scanner: ExportScanner) => PolicyVerdict) | undefined
}

export class ExportSession {
  readonly scanner: ExportScanner
  readonly format: ExportFormat
  stop: StopReason | undefined = undefined
  /** Last policy verdict asked during the stream (undefined: never needed). */
  lastVerdict: PolicyVerdict | undefined = undefined
  bytesIn = 0
  bytesOut = 0
  /** Records that passed their checkpoint (see `records`). */
  #passed = 0
  readonly #engine: JsonEngine | CsvEngine
  readonly #judge: SessionOptions['judge']
  readonly #codec: SingleByteCodec | undefined
  /** UTF-8 exports: their bytes are checked before they are read (see Utf8Check). */
  readonly #utf8: Utf8Check | undefined

  constructor(scanner: ExportScanner, opts: SessionOptions) {
    this.scanner = scanner
    this.format = opts.format
    this.#judge = opts.judge
    this.#codec = opts.codec
    this.#utf8 = opts.codec === undefined ? new Utf8Check() : undefined
    const checkpoint = () => this.#checkpoint()
    this.#engine = opts.format === 'csv' ? new CsvEngine(scanner, opts, checkpoint) : new JsonEngine(scanner, opts, checkpoint)
  }

  /**
   * Records delivered: those that passed inspection. The record that tripped a block or a denial
   * is read (and counted by the engine) but never leaves, so it is not one of them: the audit
   * line said one more record than the NDJSON error record did.
   */
  get records(): number {
    return this.#passed
  }

  /** Feed bytes; returns output that may be released now. Never throws: errors become `stop`. */
  async write(chunk: Buffer): Promise<Buffer | undefined> {
    if (this.stop !== undefined) return undefined
    this.bytesIn += chunk.length
    try {
      // The rules read UTF-8 (and ASCII-compatible) text. UTF-16 or UTF-32 puts a NUL beside every
      // ASCII character, so "123-45-6789" matches nothing, yet the client reads it back (a
      // BOM-less one too); JSON fails on those bytes by itself, CSV takes any byte in a cell.
      // Checked before UTF-8 is: it names the likelier cause of a UTF-16 BOM (FF FE) too.
      if (this.format === 'csv' && chunk.indexOf(0) !== -1) throw new CsvBytesError('NUL bytes: UTF-16, UTF-32 or binary content')
      // Up to an invalid byte the export is read as usual: the records before it go out
      // whatever the chunks of the transfer split, then it stops.
      const bad = this.#utf8 === undefined ? -1 : this.#utf8.write(chunk)
      await this.#engine.write(this.#codec !== undefined ? this.#codec.toUtf8(chunk) : bad === -1 ? chunk : chunk.subarray(0, bad))
      if (bad !== -1) throw this.#utf8!.error
    } catch (err) {
      this.#malformed(err)
    }
    return this.#take()
  }

  async end(): Promise<Buffer | undefined> {
    if (this.stop !== undefined) return undefined
    try {
      this.#utf8?.end()
      await this.#engine.end()
    } catch (err) {
      this.#malformed(err)
    }
    return this.#take()
  }

  #take(): Buffer | undefined {
    // What the engine released passed its checkpoint, also in the write that stopped the export
    // (the record that tripped the stop is never released): the records before it go out. They
    // were dropped with the stop, while the NDJSON error record said they had been delivered.
    const s = this.#engine.take()
    if (s === '') return undefined
    const b = this.#codec === undefined ? Buffer.from(s, 'utf8') : this.#codec.encode(s)
    this.bytesOut += b.length
    return b
  }

  #malformed(err: unknown): void {
    if (this.stop !== undefined) return
    // The parser's own message may quote input bytes; only ours (positions) are kept.
    const detail = err instanceof JsonSyntaxError || err instanceof CsvBytesError || err instanceof CsvShapeError || err instanceof Utf8Error ? err.message : this.format === 'csv' ? 'malformed CSV' : 'malformed input'
    this.stop = { kind: 'malformed', message: `the export is not valid ${this.format.toUpperCase()} and cannot be inspected (${detail})` }
  }

  /** Called at each record boundary: may the record's output leave? */
  #checkpoint(): boolean {
    if (this.stop !== undefined) return false
    const s = this.scanner
    if (s.blockedType !== -1) {
      const name = s.pack.types[s.blockedType]!.name
      const count = s.count(s.blockedType, 4)
      this.stop = { kind: 'block', type: name, count, rule: s.blockedRule, message: `export blocked: ${count} ${name} value${count === 1 ? '' : 's'} found (rule ${s.blockedRule}); preset action is block` }
      return false
    }
    if (s.policyDirty) {
      s.policyDirty = false
      if (this.#judge !== undefined) {
        const v = this.#judge(s)
        this.lastVerdict = v
        if (!v.allow) {
          this.stop = { kind: 'policy', message: v.reason }
          return false
        }
      }
    }
    this.#passed = this.#engine.records
    return true
  }
}

/** An export declared (or taken to be) UTF-8 that is not: a byte sequence UTF-8 does not have. */
class Utf8Error extends Error {}

/**
 * Checks that the bytes of a UTF-8 export are UTF-8, whatever the chunks of the transfer split.
 * Decoded leniently, each invalid byte became U+FFFD: an unlabeled Latin-1 export ("J\xf6rg")
 * left as "J\ufffdrg", its letters lost for good, with no sign of it (RFC 8259 §8.1: JSON is
 * UTF-8). The rules read what the decoder made of the bytes, not what a client of another
 * charset reads, so such an export is malformed: refused like invalid JSON.
 */
class Utf8Check {
  /** The start of a character the last chunk cut (at most 3 bytes). */
  #tail: Buffer | undefined
  #offset = 0
  /** Set when write() found an invalid byte. */
  error: Utf8Error | undefined

  /** Where in `chunk` the first invalid byte is (0 when it began in an earlier chunk), or -1. */
  write(chunk: Buffer): number {
    const tail = this.#tail?.length ?? 0
    const b = tail === 0 ? chunk : Buffer.concat([this.#tail!, chunk])
    const cut = b.length - incompleteTail(b)
    if (!isUtf8(b.subarray(0, cut))) {
      const at = firstInvalid(b.subarray(0, cut))
      this.error = new Utf8Error(`invalid UTF-8 at byte ${this.#offset - tail + at}; an export in another charset must name it in its Content-Type`)
      return Math.max(0, at - tail)
    }
    this.#tail = cut === b.length ? undefined : Buffer.from(b.subarray(cut))
    this.#offset += chunk.length
    return -1
  }

  end(): void {
    if (this.#tail !== undefined) throw new Utf8Error(`invalid UTF-8 at byte ${this.#offset - this.#tail.length}: the export ends inside a character`)
  }
}

/** Sequence length announced by a lead byte (0: a continuation byte; 1: ASCII or a byte UTF-8 never uses). */
function utf8Length(byte: number): number {
  if (byte < 0x80) return 1
  if (byte < 0xc0) return 0
  return byte < 0xe0 ? 2 : byte < 0xf0 ? 3 : byte < 0xf8 ? 4 : 1
}

/** How many bytes at the end of `b` start a character that is not complete yet (0-3). */
function incompleteTail(b: Buffer): number {
  for (let k = 1; k <= 3 && k <= b.length; k++) {
    const len = utf8Length(b[b.length - k]!)
    if (len !== 0) return len > k ? k : 0
  }
  return 0
}

/** Where the first byte of an invalid sequence is (`b` is known to hold one). */
function firstInvalid(b: Buffer): number {
  let i = 0
  while (i < b.length) {
    const len = Math.max(utf8Length(b[i]!), 1)
    if (!isUtf8(b.subarray(i, i + len))) return i
    i += len
  }
  return i
}

interface Engine {
  readonly records: number
  write(chunk: Buffer): void | Promise<void>
  end(): void | Promise<void>
  take(): string
}

class JsonEngine implements Engine {
  readonly #rw: JsonRewriter
  readonly #decoder = new StringDecoder('utf8')
  constructor(scanner: ExportScanner, opts: SessionOptions, checkpoint: () => boolean) {
    const pack: RulePack = scanner.pack
    // Whole-value tokens are computed per chunk in one batch (see ExportScanner.deferTokens).
    scanner.deferTokens()
    this.#rw = new JsonRewriter(scanner, { multi: opts.format === 'ndjson', hintOf: (k) => pack.fieldHint(k), scope: opts.scope, maxTokenChars: opts.maxTokenChars, maxRecordChars: opts.maxRecordChars, checkpoint })
  }
  get records(): number {
    return this.#rw.values
  }
  write(chunk: Buffer): void {
    this.#rw.write(this.#decoder.write(chunk))
  }
  end(): void {
    const rest = this.#decoder.end()
    if (rest !== '') this.#rw.write(rest)
    this.#rw.end()
  }
  take(): string {
    return this.#rw.take()
  }
}

/** A CSV export holding NUL bytes: UTF-16/UTF-32 text (Excel's "Unicode text") or binary. */
class CsvBytesError extends Error {}

/** What csv-parse refused, in our words: its own messages may quote the input. */
class CsvShapeError extends Error {}

/**
 * A reason an operator can act on: a row over maxValueBytes was refused as "malformed CSV", like
 * broken quoting, so nothing said which limit to raise. Positions and limits only.
 */
function csvShapeError(err: Error, maxBytes: number): CsvShapeError {
  const { code, lines } = err as Error & { code?: unknown; lines?: unknown }
  const at = typeof lines === 'number' ? ` at line ${lines}` : ''
  if (code === 'CSV_MAX_RECORD_SIZE') return new CsvShapeError(`a row longer than ${maxBytes} bytes${at}, the dlp filter's maxValueBytes`)
  if (code === 'CSV_QUOTE_NOT_CLOSED') return new CsvShapeError(`a quoted field still open when the export ends${at}`)
  return new CsvShapeError(typeof code === 'string' && /^CSV_[A-Z_]{1,64}$/.test(code) ? `malformed CSV: ${code}${at}` : 'malformed CSV')
}

/** CSV through csv-parse (quoting, embedded newlines, BOM); changed or not, rows are re-written by csv-stringify. */
class CsvEngine implements Engine {
  readonly #scanner: ExportScanner
  readonly #parser: CsvParser
  readonly #checkpoint: () => boolean
  readonly #header: boolean
  readonly #delimiter: string
  #hints: number[] | undefined
  /** Name/value rows (`field,value` columns): the column naming each row's field and the value column (-1: none). */
  #nameCol = -1
  #valueCol = -1
  #eol: string | undefined
  #out: string[] = []
  #records = 0
  #error: Error | undefined
  #stopped = false
  #lastRaw = ''
  /** The first bytes of the input (up to 3), to tell whether it starts with a UTF-8 BOM. */
  #head: Buffer | undefined = Buffer.alloc(0)
  /** The input started with a UTF-8 BOM not yet written back. */
  #bom = false

  constructor(scanner: ExportScanner, opts: SessionOptions, checkpoint: () => boolean) {
    this.#scanner = scanner
    this.#checkpoint = checkpoint
    this.#header = opts.csvHeader
    this.#delimiter = opts.csvDelimiter
    this.#parser = new CsvParser({
      delimiter: opts.csvDelimiter,
      raw: true,
      bom: true,
      relax_column_count: true,
      // A quote inside an unquoted cell is a literal character (`5" screen`), as Excel, Python's
      // csv module and PapaParse read it; a quote that opens a cell still quotes it. The rows are
      // written out again from what was parsed (and scanned), so the client reads those cells.
      relax_quotes: true,
      // Any of CRLF, LF and CR ends a row, as in Excel and Python (rows are written with the first
      // row's ending). Left to itself csv-parse takes the first one it sees as the only one: after a
      // CRLF header, LF rows ran together into one cell; after an LF header, CRLF rows kept a CR.
      record_delimiter: ['\r\n', '\n', '\r'],
      max_record_size: opts.maxTokenChars,
      // With `raw: true` each record arrives as { record, raw } (the typings describe the default shape).
      on_record: (rec) => {
        const r = rec as unknown as { record: string[]; raw: string }
        this.#record(r.record, r.raw)
        return null
      },
    })
    this.#parser.on('error', (err: Error) => {
      this.#error ??= csvShapeError(err, opts.maxTokenChars)
    })
  }

  /**
   * Data rows read: not the header row, nor a blank line (no record, as in NDJSON; pandas skips
   * them too). The header counted as a record, so an export of N rows said N + 1 where an NDJSON
   * export of the same rows said N.
   */
  get records(): number {
    return this.#records
  }

  #record(fields: string[], raw: string): void {
    if (this.#stopped) return
    // `raw` holds the first character of the row's delimiter only: CR is CRLF or a lone CR (written as CRLF).
    this.#eol ??= raw.endsWith('\r') ? '\r\n' : '\n'
    this.#lastRaw = raw
    // The header row is read like data too (without field hints): a headerless file under
    // `header: true` would otherwise pass its first record unread.
    // Blank lines before it are not the header (pandas and R skip them too): the names on the
    // first row with content are the field hints; a leading blank line used to leave every column unnamed.
    const isHeader = this.#header && this.#hints === undefined && (fields.length > 1 || fields[0] !== '')
    if (isHeader) {
      const pack = this.#scanner.pack
      this.#hints = fields.map((h) => pack.fieldHint(h))
      const roles = fields.map((h) => pairRole(h.trim()))
      const name = roles.indexOf(PAIR_NAME)
      const value = roles.indexOf(PAIR_VALUE)
      if (name !== -1 && value !== -1) {
        this.#nameCol = name
        this.#valueCol = value
      }
    }
    // A name/value row (`ssn,123456789` under `field,value`): the value column takes the hints of the field the row names.
    const named = isHeader || this.#valueCol === -1 || (fields[this.#valueCol]?.length ?? 0) < this.#scanner.minLength ? '' : (fields[this.#nameCol] ?? '')
    const pairHint = named === '' || named.length > PAIR_NAME_MAX_CHARS ? 0 : this.#scanner.pack.fieldHint(named)
    let row = fields
    for (let i = 0; i < fields.length; i++) {
      const r = this.#scanner.visit(fields[i]!, isHeader ? 0 : (this.#hints?.[i] ?? 0) | (i === this.#valueCol ? pairHint : 0))
      if (r === undefined) continue
      if (typeof r !== 'string') this.#scanner.flush() // not deferred for CSV; complete it if it ever is
      if (row === fields) row = fields.slice()
      row[i] = typeof r === 'string' ? r : r.value
    }
    if (!isHeader && (fields.length > 1 || fields[0] !== '')) this.#records++
    let line = csvStringify([row], { delimiter: this.#delimiter, record_delimiter: this.#eol, quoted_match: /[\r\n]/ })
    // csv-parse drops the byte-order mark; it goes back in front of the first row (Excel reads a
    // UTF-8 CSV without one in the ANSI code page: "Jörg" became "JÃ¶rg").
    if (this.#bom) {
      line = '\ufeff' + line
      this.#bom = false
    }
    if (this.#checkpoint()) this.#out.push(line)
    else this.#stopped = true
  }

  write(chunk: Buffer): Promise<void> {
    const head = this.#head
    if (head !== undefined) {
      // The first record cannot end before the third byte when the input starts with a BOM.
      const h = head.length + chunk.length >= 3 ? Buffer.concat([head, chunk.subarray(0, 3 - head.length)]) : Buffer.concat([head, chunk])
      if (h.length >= 3) {
        this.#bom = h[0] === 0xef && h[1] === 0xbb && h[2] === 0xbf
        this.#head = undefined
      } else this.#head = h
    }
    return new Promise((resolve, reject) => {
      this.#parser.write(chunk, () => (this.#error ? reject(this.#error) : resolve()))
    })
  }

  end(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#error) return reject(this.#error)
      this.#parser.once('error', () => reject(this.#error))
      this.#parser.end(() => {
        if (this.#error) return reject(this.#error)
        // The last row had no line ending: do not add one.
        if (!this.#stopped && this.#out.length && !/[\r\n]$/.test(this.#lastRaw)) {
          const last = this.#out.length - 1
          this.#out[last] = this.#out[last]!.slice(0, -this.#eol!.length)
        }
        resolve()
      })
      this.#parser.resume()
    })
  }

  take(): string {
    const s = this.#out.join('')
    this.#out = []
    return s
  }
}
