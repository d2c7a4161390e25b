// Replay cursors: an opaque token of (stream, epoch, offset, time), HMAC-signed so a client
// cannot forge a position. The stream id inside binds a cursor to the subscription (tenant,
// credentials, document, variables) it came from: it is never honoured on another stream.
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto'

export const STREAM_ID_BYTES = 12
export const EPOCH_BYTES = 8
const MAC_BYTES = 12
const VERSION = 1
const O_STREAM = 1
const O_EPOCH = O_STREAM + STREAM_ID_BYTES
const O_OFFSET = O_EPOCH + EPOCH_BYTES
const O_TS = O_OFFSET + 6
const BODY = O_TS + 6
const TOTAL = BODY + MAC_BYTES
/** base64url length of a cursor; anything else is rejected before decoding. */
export const CURSOR_LENGTH = Math.ceil((TOTAL * 4) / 3)

export interface CursorPosition {
  /** Hex, STREAM_ID_BYTES long: which stream. */
  readonly streamId: string
  /** Hex, EPOCH_BYTES long: which incarnation of the stream. */
  readonly epoch: string
  /** Events of the epoch up to and including this one were seen; 0 = the epoch's start. */
  readonly offset: number
  /** Wall-clock ms of that event (0 when unknown); tells an aged-out log from a trimmed one. */
  readonly ts: number
}

const HEX_STREAM = new RegExp(`^[0-9a-f]{${STREAM_ID_BYTES * 2}}$`)
const HEX_EPOCH = new RegExp(`^[0-9a-f]{${EPOCH_BYTES * 2}}$`)
const MAX_UINT48 = 2 ** 48 - 1

export class CursorCodec {
  readonly #sign: KeyObject
  readonly #verify: readonly KeyObject[]

  /** `keys[0]` signs; every key verifies (rotation). */
  constructor(keys: readonly (string | Buffer)[]) {
    if (keys.length === 0) throw new Error('a cursor codec needs a key')
    // A KeyObject, made once: createHmac with a raw key re-imports it every call (5× slower).
    this.#verify = keys.map((k) => createSecretKey(typeof k === 'string' ? Buffer.from(k, 'utf8') : k))
    this.#sign = this.#verify[0]!
  }

  encode(pos: CursorPosition): string {
    if (!HEX_STREAM.test(pos.streamId) || !HEX_EPOCH.test(pos.epoch)) throw new Error('cursor: malformed stream id or epoch')
    if (!Number.isSafeInteger(pos.offset) || pos.offset < 0 || pos.offset > MAX_UINT48) throw new Error('cursor: offset out of range')
    const buf = Buffer.allocUnsafe(TOTAL)
    buf[0] = VERSION
    buf.write(pos.streamId, O_STREAM, STREAM_ID_BYTES, 'hex')
    buf.write(pos.epoch, O_EPOCH, EPOCH_BYTES, 'hex')
    buf.writeUIntBE(pos.offset, O_OFFSET, 6)
    buf.writeUIntBE(Math.max(0, Math.min(MAX_UINT48, Math.floor(pos.ts))), O_TS, 6)
    mac(this.#sign, buf).copy(buf, BODY, 0, MAC_BYTES)
    return buf.toString('base64url')
  }

  /** The position, or undefined when the token is malformed or its signature does not verify. */
  decode(token: unknown): CursorPosition | undefined {
    if (typeof token !== 'string' || token.length !== CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) return undefined
    const buf = Buffer.from(token, 'base64url')
    if (buf.length !== TOTAL || buf[0] !== VERSION) return undefined
    const given = buf.subarray(BODY)
    let ok = false
    for (const key of this.#verify) {
      if (timingSafeEqual(mac(key, buf).subarray(0, MAC_BYTES), given)) {
        ok = true
        break
      }
    }
    if (!ok) return undefined
    return {
      streamId: buf.toString('hex', O_STREAM, O_EPOCH),
      epoch: buf.toString('hex', O_EPOCH, O_OFFSET),
      offset: buf.readUIntBE(O_OFFSET, 6),
      ts: buf.readUIntBE(O_TS, 6),
    }
  }
}

function mac(key: KeyObject, buf: Buffer): Buffer {
  return createHmac('sha256', key).update(buf.subarray(0, BODY)).digest()
}
