// Secrets in a topic's free-form `variables` (sent upstream with the subscription): a secret-named
// key is redacted in /config whatever its value's type, nested maps and lists included.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { redactConfig } from '../../config/redact.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const QUERY = 'subscription { ticks }'

describe('redaction of non-string and nested secrets', () => {
  let proxy: TestProxy
  beforeAll(async () => {
    proxy = await startTestProxy({
      routes: [{ name: 'g', upstream: 'http://127.0.0.1:9' }],
      subscriptions: {
        topics: {
          ticks: {
            query: QUERY,
            variables: { apiKey: 98765432101, pin: 4321, auth: { token: 55512345 }, session: { password: { value: 'pw-in-a-map' } }, limit: 10, region: 'eu' },
          },
        },
      },
    })
  })
  afterAll(async () => {
    await proxy?.close()
  })

  it('/config hides numbers under secret names and values nested under them; other variables stay', async () => {
    const res = await request(`${proxy.adminUrl}/config`)
    const text = await res.body.text()
    expect(res.statusCode).toBe(200)
    expect(text).not.toContain('98765432101')
    expect(text).not.toContain('55512345')
    expect(text).not.toContain('pw-in-a-map')
    const vars = (JSON.parse(text) as { config: { subscriptions: { topics: { ticks: { variables: Record<string, unknown> } } } } }).config.subscriptions.topics.ticks.variables
    expect(vars).toEqual({ apiKey: '[redacted]', pin: 4321, auth: { token: '[redacted]' }, session: { password: { value: '[redacted]' } }, limit: 10, region: 'eu' })
  })

  it('booleans and list items under secret names too; schema fields named like secrets keep their shape', () => {
    expect(redactConfig({ variables: { secret: true, credentials: [1234, 'x'], tokens: { a: [{ b: 7 }] } } })).toEqual({
      variables: { secret: '[redacted]', credentials: ['[redacted]', '[redacted]'], tokens: { a: [{ b: '[redacted]' }] } },
    })
    // A tenant named like a secret holds no secret, and the cache filter's `authorization:` section is settings.
    const cache = { name: 'cache', authorization: { privateHeaders: ['authorization'], scopes: ['read'], scopeClaim: 'scope' } }
    expect(redactConfig({ tenants: { 'private-bank': { tier: 'gold', limitPerDay: 5 } }, routes: [{ filters: [cache] }] })).toEqual({
      tenants: { 'private-bank': { tier: 'gold', limitPerDay: 5 } },
      routes: [{ filters: [cache] }],
    })
  })
})
