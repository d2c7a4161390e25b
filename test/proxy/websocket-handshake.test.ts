// The pure checks behind the WebSocket robustness fixes: the client handshake judged the way ws
// will judge it (so nothing is opened upstream for a handshake ws then refuses).
import { describe, expect, it } from 'vitest'
import * as wsModule from 'ws'
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

