// The pure checks behind the WebSocket robustness fixes: the client handshake judged the way ws
// will judge it (so nothing is opened upstream for a handshake ws then refuses), the JSON depth
// limit on terminated sockets, and which upstream failures the graphql-ws client may retry.
import { describe, expect, it } from 'vitest'
import * as wsModule from 'ws'
import WebSocket from 'ws'
import { MAX_JSON_DEPTH } from '../../proxy/json-depth.ts'
import { LEGACY_WS, parseClientMessage, TOPICS, TRANSPORT_WS } from '../../proxy/subscriptions/protocols.ts'
import { isConnectionFailure } from '../../proxy/subscriptions/upstream.ts'
import { parseSubprotocols } from '../../proxy/websocket-bridge.ts'

// ws's own parser (exported at runtime, not in its type declarations).
type WsParser = { parse(header: string): Set<string> }
const wsNs = wsModule as unknown as { subprotocol?: WsParser; default?: { subprotocol?: WsParser } }
const wsParser = (wsNs.subprotocol ?? wsNs.default?.subprotocol)!

function wsVerdict(header: string): string[] | undefined {
  try {
    return [...wsParser.parse(header)]
  } catch {
    return undefined
  }
}

describe('Sec-WebSocket-Protocol as ws parses it', () => {
  it('accepts and refuses exactly what ws does', () => {
    expect(wsParser).toBeDefined()
    const headers = [
      'graphql-transport-ws',
      'graphql-transport-ws, graphql-ws',
      'graphql-transport-ws,graphql-ws',
      'a ,b',
      'a\t, b\t',
      'a,  b',
      'a b, (c)',
      'graphql-transport-ws,,',
      ',,,',
      ',a',
      'a,',
      '',
      ' a',
      'a ',
      'x, x',
      'a b',
      'é',
      'a;b',
      "!#$%&'*+-.^_`|~09AZaz",
      'a,b,c,d,a',
      '\ta',
      'a,\tb',
    ]
    for (const h of headers) expect(parseSubprotocols(h), JSON.stringify(h)).toEqual(wsVerdict(h))
    expect(parseSubprotocols(undefined)).toEqual([])
  })

  it('agrees with ws on random headers', () => {
    const alphabet = ['a', 'b', 'x-1', ',', ',', ' ', '\t', '(', '"', ';', 'é']
    let seed = 42
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
    for (let n = 0; n < 5_000; n++) {
      let h = ''
      const len = 1 + Math.floor(rnd() * 8)
      for (let i = 0; i < len; i++) h += alphabet[Math.floor(rnd() * alphabet.length)]
      expect(parseSubprotocols(h), JSON.stringify(h)).toEqual(wsVerdict(h))
    }
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
