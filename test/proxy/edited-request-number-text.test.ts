// A request the gateway edits (a persisted id filled in, cost hints added) is re-serialized.
// JSON.parse reads fractions into doubles, so 12345678901234567.891 would reach the backend as
// 12345678901234568 and 1.50 as 1.5: a Decimal/BigDecimal scalar (money) would get another
// amount. The client's spelling of every number is kept; requests nobody edits pass byte for byte.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { hasRespelledNumber, keepClientNumberText } from '../../config/json-numbers.ts'
import { parseGetParams, parsePostBody, type GraphQLRequest } from '../../proxy/graphql-request.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const VARS = '{"amount":12345678901234567.891,"rate":1.50,"tiny":1e-400,"exp":2.5E3,"id":9007199254740993,"n":7,"list":[0.1000000000000000055511151231257827,-0.0,3]}'

describe('re-serializing an edited request keeps the client\'s number text', () => {
  it('POST toBody: fractions keep their digits and spelling; safe integers and replaced variables as they are', () => {
    const gql = parsePostBody(Buffer.from(`{"query":"{ a }","variables":${VARS}}`)) as GraphQLRequest
    gql.setQuery('{ a __typename }')
    expect(gql.toBody().toString()).toBe(`{"query":"{ a __typename }","variables":${VARS}}`)
    // With only integer-valued numbers nothing is read again: sent as their values.
    const ints = parsePostBody(Buffer.from('{"query":"{ a }","variables":{"a":2.5E3,"b":-0.0,"c":7}}')) as GraphQLRequest
    ints.setQuery('{ b }')
    expect(ints.toBody().toString()).toBe('{"query":"{ b }","variables":{"a":2500,"b":0,"c":7}}')
    gql.setVariables({ amount: 1.25 })
    expect(gql.toBody().toString()).toBe('{"query":"{ a __typename }","variables":{"amount":1.25}}')
  })

  it('GET toGetPath: the variables parameter keeps its number text', () => {
    const search = `query=${encodeURIComponent('{ a }')}&variables=${encodeURIComponent(VARS)}`
    const gql = parseGetParams(search)!
    gql.setQuery('{ b }')
    expect(new URLSearchParams(gql.toGetPath(`/graphql?${search}`).split('?')[1]).get('variables')).toBe(VARS)
  })

  it('the trigger and the reviver: only numbers that are not safe integers, only when their text differs', () => {
    expect(hasRespelledNumber({ a: [1, 2, { b: -3 }] })).toBe(false)
    expect(hasRespelledNumber({ a: [1, 2, { b: 0.5 }] })).toBe(true)
    expect(hasRespelledNumber(2 ** 53)).toBe(true)
    const parsed = JSON.parse('{"a":1.5,"b":1.50,"c":7,"d":"1.50"}', keepClientNumberText) as Record<string, unknown>
    expect([parsed.a, parsed.c, parsed.d]).toEqual([1.5, 7, '1.50']) // plain values where nothing changes
    expect(JSON.stringify(parsed)).toBe('{"a":1.5,"b":1.50,"c":7,"d":"1.50"}')
  })
})

describe('through the proxy: a persisted id filled in with its document', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const bodies: string[] = []

  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks).toString('utf8'))
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{"pay":true}}')
      })
    })
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { pay: { document: 'mutation Pay($amount: Decimal!, $rate: Float) { pay(amount: $amount, rate: $rate) }', costUnits: 3 } } },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted' }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('the backend reads the amounts the client wrote; an unedited request passes byte for byte', async () => {
    const send = async (body: string) => {
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body })
      expect(res.statusCode).toBe(200)
      await res.body.text()
    }
    await send(`{"documentId":"pay","variables":${VARS}}`)
    const sent = bodies.at(-1)!
    expect(sent).toContain('mutation Pay')
    expect(sent).toContain(`"variables":${VARS}`)
    const plain = `{"query":"{ hello }","variables":${VARS}}`
    await send(plain)
    expect(bodies.at(-1)).toBe(plain)
  })
})
