// A dlp filter placed before the tenant filter ran with no tenant yet: each tenant's own preset
// (dlp.tenants.<id>.preset) was ignored without a word and the policy saw tenant null. Refused at
// load, naming the path, as a quota filter before the tenant filter is.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'

const doc = (filters: unknown[]) => ({
  tenants: { acme: {} },
  dlp: { defaultPreset: 'mask_basic', tenants: { acme: { preset: 'tokenize_strict' } } },
  routes: [
    { name: 'api', upstream: 'http://127.0.0.1:4000', type: 'graphql', filters: [{ name: 'tenant' }] },
    { name: 'export', upstream: 'http://127.0.0.1:4000', type: 'http', filters },
  ],
})

const dlp = { name: 'dlp', exports: { paths: [{ prefix: '/export/' }] } }

describe('dlp after the tenant filter (sweep 31h)', () => {
  it('a dlp filter before the tenant filter is refused, naming its path and the tenant filter', () => {
    expect(problems(() => validateConfig(doc([{ name: 'request-id' }, dlp, { name: 'tenant' }])))).toEqual([
      "routes[1].filters[1]: dlp must come after the tenant filter (routes[1].filters[2]): it reads the tenant's preset and gives the policy the tenant",
    ])
  })

  it('(guard) after the tenant filter, or on a route without one, it loads', () => {
    expect(() => validateConfig(doc([{ name: 'tenant' }, dlp]))).not.toThrow()
    expect(() => validateConfig(doc([dlp]))).not.toThrow()
  })
})
