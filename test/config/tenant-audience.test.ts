// jwt.audience: [] passed validation and then refused every token (no audience can match an
// empty list): every request of the route was a 401. It is refused at load, naming the path.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'

const route = (jwt: Record<string, unknown>) => ({ routes: [{ name: 'api', upstream: 'http://127.0.0.1:1', filters: [{ name: 'tenant', jwt: { secret: 'x'.repeat(32), claim: 'tenant', ...jwt } }] }] })

describe('tenant jwt.audience', () => {
  it('an empty list is refused with the path and what to do', () => {
    expect(() => validateConfig(route({ audience: [] }))).toThrow(/routes\[0\]\.filters\[0\]\.jwt\.audience: expected at least one audience \(omit audience to accept any\)/)
  })
  it('a string, a list, or none are accepted', () => {
    for (const audience of ['api', ['api', 'web'], undefined]) expect(() => validateConfig(route(audience === undefined ? {} : { audience }))).not.toThrow()
  })
})
