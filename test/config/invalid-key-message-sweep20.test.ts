// A map key its schema refuses: the problem said what every key takes ("letters, digits, _ . -")
// whatever the map, which was wrong for persisted operation ids (":@/+=~" too) and tenant ids
// (":@"): the operator was told to drop characters that are allowed. Now the key's own rule.
import { describe, expect, it } from 'vitest'
import { ConfigError, validateConfig } from '../../config/load.ts'

function problems(doc: unknown): string[] {
  try {
    validateConfig(doc as never)
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  throw new Error('accepted')
}

describe('a refused map key names the rule of that map', () => {
  const route = { name: 'r', upstream: 'http://127.0.0.1:1' }
  it('persisted operation ids: the characters an id may hold, ~ and : among them', () => {
    const lines = problems({ persistedDocuments: { operations: { 'bad id!': { query: 'query A { a }' } } }, routes: [route] })
    expect(lines).toEqual([expect.stringMatching(/^persistedDocuments\.operations\.bad id!: not a valid name here: expected an operation id of .*~/)])
  })
  it('tenant ids: ":" and "@" are named as allowed', () => {
    const lines = problems({ tenants: { 'bad tenant!': {} }, routes: [route] })
    expect(lines).toEqual([expect.stringMatching(/^tenants\.bad tenant!: not a valid name here: expected a tenant id .*":", "@"/)])
  })
})
