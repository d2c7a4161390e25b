import { describe, expect, it } from 'vitest'
import { canonicalJson, credentialScope, streamKey, type StreamIdentity } from '../../../proxy/subscriptions/dedup-key.ts'

const base: StreamIdentity = {
  route: 'gql',
  upstreamUrl: 'ws://127.0.0.1:4000/graphql',
  tenant: 'acme',
  scope: 'cred:x',
  docHash: 'd'.repeat(64),
  operationName: 'OnChange',
  variables: { id: '1', filter: { a: 1, b: [1, 2] } },
  extensions: undefined,
}

describe('dedup key', () => {
  it('canonical JSON ignores key order at every depth, not array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, 1], c: null } })).toBe(canonicalJson({ a: { c: null, d: [2, 1] }, b: 1 }))
    expect(canonicalJson([1, 2])).not.toBe(canonicalJson([2, 1]))
    expect(canonicalJson({ a: undefined, b: 1 })).toBe(canonicalJson({ b: 1 }))
  })

  it('identical subscribes share a key whatever the variable key order', () => {
    const a = streamKey(base)
    const b = streamKey({ ...base, variables: { filter: { b: [1, 2], a: 1 }, id: '1' } })
    expect(a).toEqual(b)
    expect(a.streamId).toHaveLength(24)
    expect(a.key.startsWith(a.streamId)).toBe(true)
  })

  it('every field that can change what the backend sends splits the key', () => {
    const k = streamKey(base).key
    const variants: Partial<StreamIdentity>[] = [
      { tenant: 'globex' },
      { tenant: undefined },
      { scope: 'cred:y' },
      { route: 'other' },
      { upstreamUrl: 'ws://127.0.0.1:4001/graphql' },
      { docHash: 'e'.repeat(64) },
      { operationName: undefined },
      { variables: { id: 1, filter: { a: 1, b: [1, 2] } } }, // 1 is not "1"
      { variables: { id: '1', filter: { a: 1, b: [2, 1] } } },
      { extensions: { x: 1 } },
    ]
    const keys = new Set([k, ...variants.map((v) => streamKey({ ...base, ...v }).key)])
    expect(keys.size).toBe(variants.length + 1)
  })

  it('no field bleeds into the next', () => {
    expect(streamKey({ ...base, tenant: 'a', scope: 'bc' }).key).not.toBe(streamKey({ ...base, tenant: 'ab', scope: 'c' }).key)
  })

  it('credential scope: identical credentials only', () => {
    const a = credentialScope({ authorization: 'Bearer A', 'x-tenant-id': 'acme' }, { token: 'A' })
    expect(credentialScope({ 'x-tenant-id': 'acme', authorization: 'Bearer A' }, { token: 'A' })).toBe(a)
    expect(credentialScope({ authorization: 'Bearer B', 'x-tenant-id': 'acme' }, { token: 'A' })).not.toBe(a)
    expect(credentialScope({ authorization: 'Bearer A', 'x-tenant-id': 'acme' }, { token: 'B' })).not.toBe(a)
    expect(credentialScope({ authorization: 'Bearer A', 'x-tenant-id': 'acme' }, undefined)).not.toBe(a)
  })
})
