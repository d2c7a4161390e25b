// redis.url that is not a URL at all (`igw proxy --redis notredis`, `redis: {url: nope}`) crashed
// the start with "TypeError: Invalid URL" and a stack trace, exit 1: the refinements parsed the
// URL even after the URL check had failed. And `redis:` (no host) was taken as valid. Both are
// config errors naming the path, exit 78, through the real CLI and the loader.
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../config/load.ts'

const igw = join(import.meta.dirname, '../../bin/igw.js')

describe('redis.url that is not a redis URL with a host', () => {
  it('igw proxy --redis notredis: exit 78, one problem naming redis.url, no stack trace', () => {
    const r = spawnSync(process.execPath, [igw, 'proxy', '--upstream', 'http://127.0.0.1:9', '--redis', 'notredis', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], { encoding: 'utf8', timeout: 30_000 })
    expect(r.status).toBe(78)
    const out = r.stderr + r.stdout
    expect(out).toContain('redis.url: expected a redis:// or rediss:// URL with a host')
    expect(out).not.toMatch(/TypeError|    at /)
  })

  it.each(['nope', 'redis:', 'redis://', 'redis://:6379'])('%s is refused with the path named', (url) => {
    let err: unknown
    try {
      validateConfig({ redis: { url }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }] })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toContain('redis.url: expected a redis:// or rediss:// URL with a host')
  })

  it('a good URL still passes', () => {
    expect(validateConfig({ redis: { url: 'redis://127.0.0.1:6379/2' }, routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }] }).redis?.url).toBe('redis://127.0.0.1:6379/2')
  })
})
