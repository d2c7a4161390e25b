// redis.url: ioredis reads a URL's query parameters as client options that override igw's own
// (`?enableOfflineQueue=1` queued every command while Redis was down, undoing "fail fast"; a
// `?maxRetriesPerRequest=20` made each request wait through 20 retries), and took a path that is
// no number (`/abc`) as db 0 without a word. Both are refused at load now, naming the field and
// never quoting a password.
import { describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../config/load.ts'

const load = (url: string) => validateConfig({ redis: { url }, routes: [{ name: 'a', upstream: 'http://127.0.0.1:1' }] })
const refusal = (url: string): string => {
  try {
    load(url)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as Error).message
  }
  throw new Error(`${url} was accepted`)
}

describe('redis.url', () => {
  it('takes host, port, credentials and a database number, in either scheme and any case', () => {
    for (const url of ['redis://127.0.0.1:6379', 'redis://127.0.0.1:6379/2', 'rediss://user:pw@redis.example.com:6380/', 'REDISS://h:6380/15']) expect(load(url).redis?.url).toBe(url)
  })

  it('refuses query parameters (ioredis client options over igw\'s own), naming the field, without the password', () => {
    const msg = refusal('redis://user:s3cret@h:6379?enableOfflineQueue=1')
    expect(msg).toMatch(/redis\.url: query parameters are not taken/)
    expect(msg).not.toContain('s3cret')
  })

  it('refuses a path that is no database number', () => {
    expect(refusal('redis://h:6379/abc')).toMatch(/redis\.url: the path must be a database number/)
  })
})
