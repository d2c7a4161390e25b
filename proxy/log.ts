// Logging. Worker threads do not write to stdout themselves: their lines are batched and
// handed to the supervisor, the single writer, so lines from different threads never
// interleave mid-line and a worker never blocks on a slow pipe.
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino'

export type LogSink = (chunk: string) => void

/** A pino destination that batches lines (by size or 25 ms) into `sink`. */
export class BatchingDestination implements DestinationStream {
  #buf: string[] = []
  #size = 0
  #timer: NodeJS.Timeout | undefined
  readonly #sink: LogSink
  readonly #maxBytes: number

  constructor(sink: LogSink, maxBytes = 64 * 1024) {
    this.#sink = sink
    this.#maxBytes = maxBytes
  }

  write(line: string): void {
    this.#buf.push(line)
    this.#size += line.length
    if (this.#size >= this.#maxBytes) this.flush()
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), 25)
      this.#timer.unref()
    }
  }

  /**
   * Hands the batch to the sink now. pino's `logger.flush(cb)` calls this with `cb`: left
   * uncalled, a filter awaiting its lines out (in close(), before a worker exits) waited forever.
   */
  flush(cb?: (err?: Error) => void): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer)
      this.#timer = undefined
    }
    if (this.#buf.length > 0) {
      const chunk = this.#buf.join('')
      this.#buf = []
      this.#size = 0
      this.#sink(chunk)
    }
    cb?.()
  }
}

const CREDENTIAL_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie']
const REDACTED = [
  ...CREDENTIAL_HEADERS.flatMap((h) => [`req.headers["${h}"]`, `res.headers["${h}"]`, `headers["${h}"]`]),
  'authorization',
  'cookie',
  'token',
  'secret',
  'password',
]

export function createLogger(level: LevelWithSilent, destination: DestinationStream, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Credentials never reach a log line, whatever a caller passes: a session cookie (request or
      // response side) and Proxy-Authorization are credentials as much as Authorization is — a
      // filter logging the request's headers wrote them in clear.
      redact: { paths: REDACTED, censor: '[redacted]' },
      serializers: { err: serializeErr },
    },
    destination,
  )
}

const stdErr = pino.stdSerializers.err

/**
 * pino's `err` serializer, made total. It throws for a frozen Error (it tags the object it walks:
 * "Cannot add property … not extensible"), an Error with an enumerable getter that throws, or a
 * thrown Proxy — and a throw from a log call escaped the very catch that logged a filter's
 * failure: its request hung and the worker thread died of the uncaught exception, taking every
 * connection on it. Such a value is logged by what can still be read of it.
 */
export function serializeErr(err: unknown): unknown {
  try {
    return stdErr(err as Error)
  } catch {
    return { type: 'Unserializable', message: readString(err, 'message') ?? '[an error that could not be serialized]', stack: readString(err, 'stack') }
  }
}

function readString(o: unknown, key: string): string | undefined {
  try {
    const v = (o as Record<string, unknown> | null | undefined)?.[key]
    return typeof v === 'string' ? v : undefined
  } catch {
    return undefined
  }
}

/**
 * A gate for repeated failure logs: true at most once per `ms`. Outages fail every request;
 * each failure is counted in a metric, and one log line per window is enough for an operator.
 */
export function oncePer(ms: number): () => boolean {
  const window = new LogWindow(ms)
  return () => window.take(performance.now()) !== undefined
}

/**
 * oncePer that also counts what it held back: take() answers how many lines were held back since
 * the last one when this one may be logged (0 or more; put it in the line), else undefined.
 * `now` is any clock the caller uses consistently (the default is monotonic). A clock that went
 * back (a wall clock stepped by NTP or a resumed VM) opens the window: held to "now - last < ms",
 * a step back of an hour silenced the failure lines gated here (Redis down, a keyring that does
 * not load, usage reports refused) for that hour.
 */
export class LogWindow {
  readonly #ms: number
  #last = -Infinity
  #held = 0

  constructor(ms: number) {
    this.#ms = ms
  }

  take(now = performance.now()): number | undefined {
    if (now >= this.#last && now - this.#last < this.#ms) {
      this.#held++
      return undefined
    }
    this.#last = now
    const held = this.#held
    this.#held = 0
    return held
  }

  /** Forget the lines held back (what they were about is over); the window itself stays. */
  reset(): void {
    this.#held = 0
  }
}

/**
 * The trace id of a well-formed W3C traceparent (trace-context §3.2), else undefined. Tracers
 * ignore a malformed one and start a new trace, so its "id" joins this line to no trace: a
 * client's `00-<any 32 characters>-…` (or an all-zero id, or two headers joined) was logged as
 * a trace id. Checked without allocating; only a valid id is sliced out.
 */
export function traceIdOf(tp: string): string | undefined {
  // version "-" trace-id "-" parent-id "-" flags; version 00 has exactly this length, later
  // versions may append fields after another "-".
  if (tp.length < 55 || (tp.length > 55 && (tp.charCodeAt(55) !== 45 || tp.startsWith('00')))) return undefined
  if (tp.charCodeAt(2) !== 45 || tp.charCodeAt(35) !== 45 || tp.charCodeAt(52) !== 45) return undefined
  if (!lowerHex(tp, 0, 2) || tp.startsWith('ff') || !lowerHex(tp, 36, 52) || !lowerHex(tp, 53, 55)) return undefined
  if (!lowerHex(tp, 3, 35) || allZero(tp, 3, 35) || allZero(tp, 36, 52)) return undefined
  return tp.slice(3, 35)
}

function lowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false
  }
  return true
}

function allZero(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) !== 48) return false
  return true
}

/**
 * A client-chosen name as a log field (operation name, operation id, topic): at most 128
 * characters, and well-formed UTF-16. A lone surrogate (a JSON body's "\ud83d", or a cut through
 * an emoji) reached the line as the escape \ud83d, which strict JSON readers (serde_json: Vector)
 * refuse, so the client's access line was lost to the log pipeline; it is now U+FFFD.
 */
export function clipLogField(name: string | undefined): string | undefined {
  if (name === undefined) return undefined
  if (name.length <= 128) return name.toWellFormed()
  const c = name.charCodeAt(127)
  return `${name.slice(0, c >= 0xd800 && c <= 0xdbff ? 127 : 128).toWellFormed()}…` // no pair cut in two
}

/** Milliseconds as access lines carry them: two decimals. */
export function roundMs(ms: number): number {
  return Math.round(ms * 100) / 100
}
