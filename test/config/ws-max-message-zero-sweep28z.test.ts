// websocket.maxMessageBytes: 0 became ws's maxPayload 0, which ws reads as no limit: a message of
// any size was buffered whole, in passthrough and terminate mode alike. Refused at load now.
import { describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../config/load.ts'

function problems(doc: Record<string, unknown>): string[] {
  try {
    validateConfig(doc)
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

describe('routes[].websocket.maxMessageBytes', () => {
  it('refuses 0 naming the path, and takes 1 byte and the default', () => {
    const route = (websocket: Record<string, unknown>) => ({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', websocket }] })
    expect(problems(route({ maxMessageBytes: 0 }))).toEqual([expect.stringMatching(/^routes\[0\]\.websocket\.maxMessageBytes: expected at least 1 byte/)])
    expect(problems(route({ maxMessageBytes: '0kib' }))).toEqual([expect.stringMatching(/^routes\[0\]\.websocket\.maxMessageBytes: expected at least 1 byte/)])
    expect(problems(route({ maxMessageBytes: 1 }))).toEqual([])
    expect(validateConfig(route({})).routes[0]!.websocket.maxMessageBytes).toBe(16 * 1024 * 1024)
  })
})
