import { describe, expect, it } from 'vitest'
import { CURSOR_LENGTH, CursorCodec } from '../../../proxy/subscriptions/cursor.ts'

const KEY = 'k'.repeat(32)
const pos = { streamId: 'a1'.repeat(12), epoch: '0f'.repeat(8), offset: 41, ts: 1_764_000_000_123 }

describe('replay cursors', () => {
  it('round-trips (stream, epoch, offset, ts) through an opaque url-safe token', () => {
    const c = new CursorCodec([KEY])
    const token = c.encode(pos)
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/)
    expect(token).toHaveLength(CURSOR_LENGTH)
    expect(c.decode(token)).toEqual(pos)
    expect(c.decode(c.encode({ ...pos, offset: 2 ** 48 - 1 }))?.offset).toBe(2 ** 48 - 1)
  })

  it('rejects every single-character forgery', () => {
    const c = new CursorCodec([KEY])
    const token = c.encode(pos)
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    let accepted = 0
    for (let i = 0; i < token.length; i++) {
      const other = alphabet[(alphabet.indexOf(token[i]!) + 7) % alphabet.length]!
      const forged = token.slice(0, i) + other + token.slice(i + 1)
      // The last character carries padding bits that may not change the bytes; only a change
      // of the decoded bytes is a forgery.
      if (Buffer.from(forged, 'base64url').equals(Buffer.from(token, 'base64url'))) continue
      if (c.decode(forged) !== undefined) accepted++
    }
    expect(accepted).toBe(0)
  })

  it('a cursor signed with another key does not verify; rotation keeps old ones valid', () => {
    const old = new CursorCodec(['o'.repeat(32)])
    const token = old.encode(pos)
    expect(new CursorCodec([KEY]).decode(token)).toBeUndefined()
    const rotated = new CursorCodec([KEY, 'o'.repeat(32)])
    expect(rotated.decode(token)).toEqual(pos)
    // new cursors are signed with the first key only
    expect(old.decode(rotated.encode(pos))).toBeUndefined()
  })

  it('rejects malformed input without throwing', () => {
    const c = new CursorCodec([KEY])
    for (const bad of [undefined, null, 42, {}, '', 'x', 'a'.repeat(CURSOR_LENGTH), '!'.repeat(CURSOR_LENGTH), c.encode(pos).slice(1), `${c.encode(pos)}A`]) {
      expect(c.decode(bad)).toBeUndefined()
    }
  })

  it('refuses to encode impossible positions', () => {
    const c = new CursorCodec([KEY])
    expect(() => c.encode({ ...pos, offset: -1 })).toThrow(/offset/)
    expect(() => c.encode({ ...pos, offset: 1.5 })).toThrow(/offset/)
    expect(() => c.encode({ ...pos, streamId: 'zz' })).toThrow(/stream id/)
    expect(() => new CursorCodec([])).toThrow()
  })
})
