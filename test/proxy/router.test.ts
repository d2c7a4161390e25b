import { describe, expect, it } from 'vitest'
import { Router, type Routable } from '../../proxy/router.ts'

const r = (name: string, host: string | undefined, pathPrefix: string): Routable => ({ name, host, pathPrefix })

describe('Router', () => {
  const router = new Router([
    r('any-root', undefined, '/'),
    r('any-api', undefined, '/api'),
    r('exact', 'api.example.com', '/'),
    r('exact-v2', 'api.example.com', '/v2'),
    r('wild', '*.example.com', '/'),
    r('wild-deep', '*.eu.example.com', '/'),
    r('ported', 'local.test:8080', '/'),
  ])
  it.each([
    ['api.example.com', '/v2/graphql', 'exact-v2'],
    ['API.Example.com:443', '/graphql', 'exact'],
    ['shop.example.com', '/x', 'wild'],
    ['a.eu.example.com', '/x', 'wild-deep'],
    ['example.com', '/api/x', 'any-api'], // the wildcard needs a label before the suffix
    ['other.org', '/api', 'any-api'],
    ['other.org', '/graphql', 'any-root'],
    [undefined, '/apix', 'any-api'], // plain string prefix, as Envoy's prefix match
    ['local.test:8080', '/', 'ported'],
    ['local.test:9090', '/', 'any-root'],
  ])('host %s path %s → %s', (host, path, want) => {
    expect(router.match(host, path)?.name).toBe(want)
  })

  it('a prefix ending in "/" also takes the path without it, so a route written "/admin/" keeps "/admin" from the catch-all route (sweep 23)', () => {
    const ingress = new Router([r('root', undefined, '/'), r('admin', undefined, '/admin/'), r('admin-host', 'a.com', '/admin/')])
    expect(ingress.match(undefined, '/admin')?.name).toBe('admin')
    expect(ingress.match(undefined, '/admin?tab=users')?.name).toBe('admin')
    expect(ingress.match(undefined, '/admin/users')?.name).toBe('admin')
    expect(ingress.match('a.com', '/admin')?.name).toBe('admin-host')
    // still a prefix of whole text, not of a segment: these are other paths
    expect(ingress.match(undefined, '/adminx')?.name).toBe('root')
    expect(ingress.match(undefined, '/admi')?.name).toBe('root')
  })

  it('returns undefined when nothing matches', () => {
    const only = new Router([r('v1', 'a.com', '/v1')])
    expect(only.match('a.com', '/v2')).toBeUndefined()
    expect(only.match('b.com', '/v1')).toBeUndefined()
  })

  it('a single catch-all route matches everything without looking', () => {
    const sidecar = new Router([r('default', undefined, '/')])
    expect(sidecar.match('whatever', '/anything')?.name).toBe('default')
  })
})
