import { describe, expect, it } from 'vitest'
import { chooseProtocol, LEGACY_WS, parseClientMessage, ProtocolWriter, TOPICS, TRANSPORT_WS } from '../../../proxy/subscriptions/protocols.ts'

const j = (v: unknown) => JSON.stringify(v)

describe('client protocols', () => {
  it('chooses graphql-transport-ws over legacy graphql-ws, topics without a subprotocol, nothing for unknown ones', () => {
    expect(chooseProtocol(['graphql-ws', 'graphql-transport-ws'])).toBe(TRANSPORT_WS)
    expect(chooseProtocol(['graphql-ws'])).toBe(LEGACY_WS)
    expect(chooseProtocol([])).toBe(TOPICS)
    expect(chooseProtocol(['igw-topics'])).toBe(TOPICS)
    expect(chooseProtocol(['mqtt'])).toBeUndefined()
  })

  it('graphql-transport-ws: subscribe takes the cursor out of extensions', () => {
    const cmd = parseClientMessage(TRANSPORT_WS, j({ id: '1', type: 'subscribe', payload: { query: 'subscription{a}', variables: { x: 1 }, extensions: { cursor: 'C', other: true } } }))
    expect(cmd).toEqual({ t: 'subscribe', id: '1', query: 'subscription{a}', operationName: undefined, variables: { x: 1 }, extensions: { other: true }, cursor: 'C', topic: undefined, filter: undefined })
    const only = parseClientMessage(TRANSPORT_WS, j({ id: '1', type: 'subscribe', payload: { query: 'q', extensions: { cursor: 'C' } } }))
    expect(only.t === 'subscribe' && only.extensions).toBeUndefined()
    expect(parseClientMessage(TRANSPORT_WS, j({ type: 'connection_init', payload: { a: 1 } }))).toEqual({ t: 'init', payload: { a: 1 } })
    expect(parseClientMessage(TRANSPORT_WS, j({ type: 'complete', id: '1' }))).toEqual({ t: 'stop', id: '1' })
    expect(parseClientMessage(TRANSPORT_WS, j({ type: 'ping', payload: { t: 1 } }))).toEqual({ t: 'ping', payload: { t: 1 } })
  })

  it('graphql-transport-ws: malformed messages are "bad" (the connection closes them with 4400)', () => {
    for (const m of ['nope', '[]', j({ type: 'subscribe', id: '', payload: { query: 'q' } }), j({ type: 'subscribe', id: '1', payload: { query: 5 } }), j({ type: 'subscribe', id: '1', payload: { query: 'q', variables: [] } }), j({ type: 'start', id: '1', payload: {} }), j({ type: 'subscribe', id: '1', payload: { query: 'q', extensions: { cursor: 3 } } }), j({ type: 'what' }), j({ type: 'connection_init', payload: 'x' })]) {
      expect(parseClientMessage(TRANSPORT_WS, m).t).toBe('bad')
    }
  })

  it('legacy graphql-ws: start/stop/connection_terminate', () => {
    expect(parseClientMessage(LEGACY_WS, j({ type: 'start', id: 'a', payload: { query: 'q' } })).t).toBe('subscribe')
    expect(parseClientMessage(LEGACY_WS, j({ type: 'stop', id: 'a' }))).toEqual({ t: 'stop', id: 'a' })
    expect(parseClientMessage(LEGACY_WS, j({ type: 'connection_terminate' }))).toEqual({ t: 'terminate' })
    expect(parseClientMessage(LEGACY_WS, j({ type: 'subscribe', id: 'a', payload: { query: 'q' } })).t).toBe('bad')
    expect(parseClientMessage(LEGACY_WS, j({ type: 'ping' })).t).toBe('bad')
  })

  it('topics: subscribe (id defaults to the topic), unsubscribe, replay, ping, init', () => {
    expect(parseClientMessage(TOPICS, j({ op: 'subscribe', topic: 'entityChanged', cursor: 'C', filter: { id: '7' } }))).toEqual({ t: 'subscribe', id: 'entityChanged', query: undefined, operationName: undefined, variables: undefined, extensions: undefined, cursor: 'C', topic: 'entityChanged', filter: { id: '7' } })
    expect(parseClientMessage(TOPICS, j({ op: 'subscribe', id: 's1', topic: 't', variables: { a: 1 } }))).toMatchObject({ t: 'subscribe', id: 's1', variables: { a: 1 } })
    expect(parseClientMessage(TOPICS, j({ op: 'unsubscribe', id: 's1' }))).toEqual({ t: 'stop', id: 's1' })
    expect(parseClientMessage(TOPICS, j({ op: 'replay', id: 's1', cursor: 'C' }))).toEqual({ t: 'replay', id: 's1', cursor: 'C' })
    expect(parseClientMessage(TOPICS, j({ op: 'ping' })).t).toBe('ping')
    expect(parseClientMessage(TOPICS, j({ op: 'init', payload: { authorization: 'x' } }))).toEqual({ t: 'init', payload: { authorization: 'x' } })
    expect(parseClientMessage(TOPICS, j({ op: 'subscribe' })).t).toBe('bad')
    expect(parseClientMessage(TOPICS, j({ op: 'subscribe', topic: 't', cursor: 1 }))).toMatchObject({ t: 'bad', id: 't' })
    expect(parseClientMessage(TOPICS, j({ op: 'replay', id: 's1' })).t).toBe('bad')
  })

  it('writers build valid JSON of each protocol, the event prefix plus the shared tail included', () => {
    const tail = ',"payload":{"data":{"a":1},"extensions":{"cursor":"C1"}}}'
    const t = new ProtocolWriter(TRANSPORT_WS)
    expect(JSON.parse(t.nextPrefix('x"1', undefined) + tail)).toEqual({ id: 'x"1', type: 'next', payload: { data: { a: 1 }, extensions: { cursor: 'C1' } } })
    const l = new ProtocolWriter(LEGACY_WS)
    expect(JSON.parse(l.nextPrefix('1', undefined) + tail).type).toBe('data')
    const p = new ProtocolWriter(TOPICS)
    expect(JSON.parse(p.nextPrefix('1', 'topic') + tail)).toEqual({ op: 'event', id: '1', topic: 'topic', payload: { data: { a: 1 }, extensions: { cursor: 'C1' } } })
    const gap = { reason: 'trimmed' as const, from: 'A', to: 'B', missed: 3 }
    const tg = JSON.parse(t.gap('1', gap))
    expect(tg.type).toBe('next')
    expect(tg.payload.extensions).toEqual({ gap, cursor: 'B' })
    expect(tg.payload.errors[0].extensions.code).toBe('STREAM_GAP')
    expect(JSON.parse(p.gap('1', gap))).toMatchObject({ op: 'gap', id: '1', gap, cursor: 'B' })
    expect(JSON.parse(t.error('1', [{ message: 'm' }]))).toEqual({ id: '1', type: 'error', payload: [{ message: 'm' }] })
    expect(JSON.parse(t.complete('1'))).toEqual({ id: '1', type: 'complete' })
    expect(l.keepAlive()).toBe('{"type":"ka"}')
    expect(t.keepAlive()).toBeUndefined()
    expect(JSON.parse(p.subscribed('1', 'topic', 'C')!)).toEqual({ op: 'subscribed', id: '1', topic: 'topic', cursor: 'C' })
    expect(t.subscribed('1', 't', 'C')).toBeUndefined()
  })
})
