// Terminate mode: a handshake with a WebSocket version other than 13 was refused with a 400
// that did not say which version the gateway speaks (RFC 6455 §4.4 requires
// Sec-WebSocket-Version on that refusal; ws and the passthrough bridge send it), so a client
// could not retry with the right one. Real proxy, real subscription backend, raw socket.
import { once } from 'node:events'
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'

describe('terminate mode: a WebSocket version the gateway does not speak', () => {
  let be: SubscriptionBackend
  let proxy: TestProxy
  beforeAll(async () => {
    be = await startSubscriptionBackend()
    proxy = await startTestProxy({ routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' } }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await be?.close()
  })

  const handshake = async (version: string) => {
    const sock = connect(proxy.port, '127.0.0.1')
    sock.on('error', () => undefined)
    await once(sock, 'connect')
    sock.write(`GET /graphql HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: ${version}\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-protocol: graphql-transport-ws\r\n\r\n`)
    let answer = ''
    sock.on('data', (c: Buffer) => (answer += c.toString('latin1')))
    await once(sock, 'close')
    return answer
  }

  it('is refused with 400 naming Sec-WebSocket-Version: 13', async () => {
    const answer = await handshake('8')
    expect(answer).toMatch(/^HTTP\/1.1 400 /)
    expect(answer.toLowerCase()).toMatch(/\r\nsec-websocket-version: 13\r\n/)
  })
})
