// `listen: 8080` (or `listen: ${PORT}`, a number once YAML reads it) was refused as "expected
// string, got 8080", while `--listen 8080` and IGW_LISTEN=8080 were taken as ":8080". A port number
// is now that port on every interface, in the file as on the command line.
import { describe, expect, it } from 'vitest'
import { parseConfigText } from '../../config/load.ts'
import { validateConfig } from '../../config/load.ts'

const problems = (f: () => unknown): string[] => {
  try {
    f()
  } catch (err) {
    return (err as { problems?: string[] }).problems ?? [(err as Error).message]
  }
  return []
}

describe('a listen address written as a port number', () => {
  it('is ":port" for the proxy and the admin port, from YAML and from an ${ENV} reference', () => {
    const raw = parseConfigText('listen: 8080\nadmin: { listen: ${ADMIN_PORT} }\nroutes: [{ name: a, upstream: "http://ok:1" }]\n', 'igw.yaml', { ADMIN_PORT: '9902' })
    const c = validateConfig(raw)
    expect([c.listen, c.admin.listen]).toEqual([':8080', ':9902'])
  })
  it('out of range or not whole: the path and the reason', () => {
    for (const listen of [70000, -1, 80.5]) {
      expect(problems(() => validateConfig({ listen, routes: [{ name: 'a', upstream: 'http://ok:1' }] }))).toEqual([`listen: expected a port from 0 to 65535 (a whole number), got ${listen}`])
    }
  })
})
