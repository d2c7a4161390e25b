// websocket.maxMessageBytes: 0 became ws's maxPayload 0, which ws reads as no limit: a message of
// any size was buffered whole, in passthrough and terminate mode alike. Refused at load now.
import { describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'

const problemsOf = (doc: Record<string, unknown>): string[] => problems(() => validateConfig(doc))

describe('routes[].websocket.maxMessageBytes', () => {
  it('refuses 0 naming the path, and takes 1 byte and the default', () => {
    const route = (websocket: Record<string, unknown>) => ({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1', websocket }] })
    expect(problemsOf(route({ maxMessageBytes: 0 }))).toEqual([expect.stringMatching(/^routes\[0\]\.websocket\.maxMessageBytes: expected at least 1 byte/)])
    expect(problemsOf(route({ maxMessageBytes: '0kib' }))).toEqual([expect.stringMatching(/^routes\[0\]\.websocket\.maxMessageBytes: expected at least 1 byte/)])
    expect(() => validateConfig(route({ maxMessageBytes: 1 }))).not.toThrow()
    expect(validateConfig(route({})).routes[0]!.websocket.maxMessageBytes).toBe(16 * 1024 * 1024)
  })
})
