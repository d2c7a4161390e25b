// Config loading sweep 15: what a config error and /config may print. Real loader, real schema.
import { describe, expect, it } from 'vitest'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { redactConfig } from '../../config/redact.ts'
import { problems } from '../helpers/config.ts'

describe('config errors never print a secret, whatever its type', () => {
  it('an all-digit secret from an unquoted ${VAR} (a number once parsed) is described, not quoted', () => {
    // A generated numeric secret (or an API key of digits) in an unquoted `${VAR}` takes the type
    // YAML gives it: a number. The schema wants a string, and its error quoted the number.
    const text = [
      'routes:',
      '  - name: r',
      '    upstream: http://127.0.0.1:9',
      '    filters:',
      '      - name: tenant',
      '        jwt:',
      '          secret: ${JWT_SECRET}',
      'quotas:',
      '  events:',
      '    webhook:',
      '      url: http://127.0.0.1:9/hook',
      '      headers:',
      '        x-api-key: ${HOOK_KEY}',
      '        x-flag: ${HOOK_FLAG}',
      '',
    ].join('\n')
    const env = { JWT_SECRET: '31415926535897932384626433832795028841971', HOOK_KEY: '271828182845', HOOK_FLAG: 'true' }
    const p = problems(() => validateConfig(parseConfigText(text, 'igw.yaml', env), 'igw.yaml'))
    const all = p.join('\n')
    for (const digits of ['31415', '3.14159', '271828182845']) expect(all).not.toContain(digits)
    expect(p).toContain('routes[0].filters[0].jwt.secret: expected string, got a number (not shown; quote it, or write !!str ${VAR}, to keep it a string)')
    expect(p).toContain('quotas.events.webhook.headers.x-api-key: expected string, got a number (not shown; quote it, or write !!str ${VAR}, to keep it a string)')
    expect(p).toContain('quotas.events.webhook.headers.x-flag: expected string, got a boolean (not shown; quote it, or write !!str ${VAR}, to keep it a string)')
    // Quoted, the same values are strings and the document is valid.
    const quoted = text.replace('secret: ${JWT_SECRET}', 'secret: "${JWT_SECRET}"').replace('x-api-key: ${HOOK_KEY}', 'x-api-key: !!str ${HOOK_KEY}').replace('x-flag: ${HOOK_FLAG}', "x-flag: '${HOOK_FLAG}'")
    expect(() => validateConfig(parseConfigText(quoted, 'igw.yaml', env), 'igw.yaml')).not.toThrow()
  })
})

describe('/config redaction', () => {
  it('shows which header a connection_init payload key becomes (a name), and still hides header values', () => {
    // `initPayloadHeaders` maps payload keys to header names. Its "authorization" entry was
    // taken for an Authorization header value and shown as [redacted]: /config hid the mapping.
    const config = validateConfig({
      subscriptions: { initPayloadHeaders: { authorization: 'authorization', token: 'x-api-key' } },
      quotas: { events: { webhook: { url: 'http://127.0.0.1:9/hook?token=hook-s3cr3t', headers: { authorization: 'Bearer s3cr3t-value' } } } },
      routes: [{ name: 'a', upstream: 'http://127.0.0.1:9' }],
    })
    const shown = redactConfig(config) as { subscriptions: { initPayloadHeaders: Record<string, string> }; quotas: { events: { webhook: { url: string; headers: Record<string, string> } } } }
    expect(shown.subscriptions.initPayloadHeaders).toMatchObject({ authorization: 'authorization', token: 'x-api-key' })
    expect(shown.quotas.events.webhook.headers.authorization).toBe('[redacted]')
    expect(shown.quotas.events.webhook.url).toBe('http://127.0.0.1:9/[redacted]') // a webhook's path may be its credential: origin only (sweep 19c)
    expect(JSON.stringify(shown)).not.toContain('s3cr3t')
  })
})
