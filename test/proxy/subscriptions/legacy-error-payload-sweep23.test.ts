// The legacy protocol (subscriptions-transport-ws, `graphql-ws`) sent an operation's `error`
// payload as a list. Its reference server sends an object (`{message}`), and Apollo Kotlin /
// Apollo Android read the payload as a Map: a list threw there (ClassCastException) and the
// client lost the connection. The payload is now an object — the first error's own fields with the
// whole list under `errors`, which Apollo's JS SubscriptionClient reads first — for refusals and
// for malformed operations alike; graphql-transport-ws keeps its list (its spec says so).
import { expect, it } from 'vitest'
import { LEGACY_WS, ProtocolWriter, TRANSPORT_WS } from '../../../proxy/subscriptions/protocols.ts'

it('is an object with the first error’s fields and every error under `errors`', () => {
  const legacy = new ProtocolWriter(LEGACY_WS)
  const errors = [{ message: 'forbidden', extensions: { code: 'FORBIDDEN' } }, { message: 'second' }]
  expect(JSON.parse(legacy.error('7', errors))).toEqual({ id: '7', type: 'error', payload: { message: 'forbidden', extensions: { code: 'FORBIDDEN' }, errors } })
  const bad = JSON.parse(legacy.badMessage('payload.query must be a string', '8'))
  expect(bad).toEqual({ id: '8', type: 'error', payload: { message: 'payload.query must be a string', extensions: { code: 'BAD_REQUEST' }, errors: [{ message: 'payload.query must be a string', extensions: { code: 'BAD_REQUEST' } }] } })
  expect(Array.isArray(JSON.parse(new ProtocolWriter(TRANSPORT_WS).error('7', errors)).payload)).toBe(true)
})
