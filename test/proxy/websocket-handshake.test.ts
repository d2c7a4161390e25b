// The pure checks behind the WebSocket robustness fixes: the client handshake judged the way ws
// will judge it (so nothing is opened upstream for a handshake ws then refuses), the JSON depth
// limit on terminated sockets, and which upstream failures the graphql-ws client may retry.
import { describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { MAX_JSON_DEPTH } from '../../config/json-depth.ts'
import { LEGACY_WS, parseClientMessage, TOPICS, TRANSPORT_WS } from '../../proxy/subscriptions/protocols.ts'
import { isConnectionFailure } from '../../proxy/subscriptions/upstream.ts'
import { parseSubprotocols } from '../../proxy/websocket-bridge.ts'

describe('Sec-WebSocket-Protocol, judged before anything is opened upstream', () => {
  it('accepts token lists and refuses what ws refuses (empty elements, duplicates, non-tokens, stray whitespace)', () => {
    const cases: [string, string[] | undefined][] = [
      ['graphql-transport-ws', ['graphql-transport-ws']],
      ['graphql-transport-ws, graphql-ws', ['graphql-transport-ws', 'graphql-ws']],
      ['a ,b', ['a', 'b']],
      ['a\t, b\t', undefined],
      ['a b, (c)', undefined],
      ['graphql-transport-ws,,', undefined],
      [',a', undefined],
      ['', undefined],
      ['a ', undefined],
      ['x, x', undefined],
      ['é', undefined],
      ['a;b', undefined],
    ]
    for (const [header, want] of cases) expect(parseSubprotocols(header), JSON.stringify(header)).toEqual(want)
    expect(parseSubprotocols(undefined)).toEqual([])
  })
})

describe('terminated sockets: JSON depth', () => {
  const nest = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`

  it('graphql protocols: a payload may nest as deep as an HTTP body (128), one level more is "bad"', () => {
    // payload {"a": [...]} is 1 + n levels
    expect(parseClientMessage(TRANSPORT_WS, `{"type":"ping","payload":{"a":${nest(MAX_JSON_DEPTH - 1)}}}`).t).toBe('ping')
    expect(parseClientMessage(TRANSPORT_WS, `{"type":"ping","payload":{"a":${nest(MAX_JSON_DEPTH)}}}`)).toEqual({ t: 'bad', reason: `message nested deeper than ${MAX_JSON_DEPTH} levels`, id: undefined })
    const start = parseClientMessage(LEGACY_WS, `{"id":"s1","type":"start","payload":{"query":"{a}","variables":{"v":${nest(50_000)}}}}`)
    expect(start).toMatchObject({ t: 'bad', id: 's1' })
  })

  it('topics: the message itself is the request', () => {
    expect(parseClientMessage(TOPICS, `{"op":"subscribe","topic":"t","filter":${nest(MAX_JSON_DEPTH - 1)}}`).t).toBe('subscribe')
    expect(parseClientMessage(TOPICS, `{"op":"subscribe","id":"x","topic":"t","filter":${nest(MAX_JSON_DEPTH)}}`)).toMatchObject({ t: 'bad', id: 'x' })
    expect(parseClientMessage(TOPICS, nest(50_000))).toMatchObject({ t: 'bad' })
  })
})

describe('upstream retries', () => {
  it('retries close events and socket errors, never errors thrown by code', async () => {
    expect(isConnectionFailure({ code: 1006, reason: '' })).toBe(true)
    expect(isConnectionFailure({ code: 4499, reason: 'Terminated', wasClean: false })).toBe(true)
    // a real socket error event: connection refused
    const ws = new WebSocket('ws://127.0.0.1:1/')
    const errorEvent = new Promise<unknown>((resolve) => (ws.onerror = resolve))
    await new Promise((resolve) => ws.once('close', resolve))
    expect(isConnectionFailure(await errorEvent)).toBe(true)
    let thrown: unknown
    try {
      JSON.stringify({ a: 1n })
    } catch (err) {
      thrown = err
    }
    expect(thrown).toBeInstanceOf(TypeError)
    expect(isConnectionFailure(thrown)).toBe(false)
    expect(isConnectionFailure(new RangeError('Maximum call stack size exceeded'))).toBe(false)
    expect(isConnectionFailure(new Error('First message cannot be of type next'))).toBe(false)
    expect(isConnectionFailure(undefined)).toBe(false)
    expect(isConnectionFailure('boom')).toBe(false)
  })
})
