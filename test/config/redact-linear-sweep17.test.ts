// redactUrlCredentials runs over every bad value a config error quotes (control plane PUTs, plugin
// uploads, the proxy's loader). Its pattern re-scanned the rest of each word from every word
// start: 80 KB of "a.a.a…" took seconds, a 4 MB body minutes, with the event loop blocked. It is
// linear now, and redacts what it did (plus a scheme after "_", which the word boundary missed).
import { describe, expect, it } from 'vitest'
import { redactUrlCredentials as r } from '../../config/redact.ts'

describe('redactUrlCredentials', () => {
  it('redacts credentials and secret query parameters as before', () => {
    expect(r('see https://user:pw@host.example/p?token=abc&x=1 ok')).toBe('see https://[redacted]@host.example/p?token=[redacted]&x=1 ok')
    expect(r('"redis://u:p@ss@h:6379"')).toBe('"redis://[redacted]@h:6379"')
    expect(r('HTTP://A:B@h')).toBe('HTTP://[redacted]@h')
    expect(r('postgres://u:p@h/db?sslmode=require&password=zz')).toBe('postgres://[redacted]@h/db?sslmode=require&password=[redacted]')
    expect(r('a://b c://u:p@d')).toBe('a://b c://[redacted]@d')
    expect(r('x_redis://u:p@h')).toBe('x_redis://[redacted]@h')
    expect(r('no url: here // and there')).toBe('no url: here // and there')
    expect(r('://u:p@h')).toBe('://u:p@h') // no scheme, no URL
  })

  it('is linear: megabytes of scheme-like text with URLs in and around it take well under a second each', () => {
    // Not a timing assertion of the product's speed: the old code needs minutes here (quadratic),
    // so a generous bound tells the two apart on any machine.
    const inputs = ['a.'.repeat(500_000) + ' redis://u:p@h/x', ('a'.repeat(60) + '://').repeat(20_000), '://'.repeat(300_000), `${'a-'.repeat(400_000)}://u:p@h`]
    for (const s of inputs) {
      const t = performance.now()
      const out = r(s)
      expect(performance.now() - t).toBeLessThan(5_000)
      expect(out.includes('u:p@')).toBe(false)
    }
  })
})
