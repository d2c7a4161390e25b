// DLP sweep 19b: GraphQL exports through the real proxy and a real graphql-yoga backend, undici
// clients, loopback only.
import { mkdtempSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSchema, createYoga } from 'graphql-yoga'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

// Values the rules find only with a field name (or a context word) beside them: a bare 9-digit
// SSN, a national-format phone number, a 9-digit SSN stored as a number.
const ENTITY = { id: '1', name: 'Jane Roe', email: 'jane.roe@example.com', ssn: '123456789', tin: 219099999, phone: '(202) 555-0143' }
const SECRETS = ['123456789', '219099999', '555-0143', 'jane.roe@example.com']

describe('dlp GraphQL exports (sweep 19b)', () => {
  let server: Server
  let proxy: TestProxy

  beforeAll(async () => {
    const yoga = createYoga({
      maskedErrors: false,
      batching: true,
      schema: createSchema({
        typeDefs: /* GraphQL */ `
          type Entity { id: ID!, name: String, email: String, ssn: String, tin: Int, phone: String }
          type Query { entities: [Entity!]!, other: [Entity!]! }
        `,
        resolvers: {
          Entity: { tin: (e: typeof ENTITY) => e.tin },
          Query: { entities: () => [ENTITY], other: () => [ENTITY] },
        },
      }),
    })
    server = createServer((req, res) => {
      // One backend behind both routes: /paths/graphql and /names/graphql are its /graphql.
      req.url = req.url!.replace(/^\/(?:paths|names)/, '')
      void yoga(req, res)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep19b-')), 'keyring.json')
    proxy = await startTestProxy({
      dlp: {
        keyring: { file: keyring },
        presets: { mask_all: { email: 'mask', phone_e164: 'mask', ssn_us: 'mask' } },
        policy: { enabled: false },
      },
      routes: [
        {
          name: 'by-path',
          match: { pathPrefix: '/paths/' },
          upstream,
          type: 'graphql',
          batching: { enabled: true },
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'mask_all', exports: { graphql: { responsePaths: ['entities'] } } }],
        },
        {
          name: 'by-name',
          match: { pathPrefix: '/names/' },
          upstream,
          type: 'graphql',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'mask_all', exports: { graphql: { operations: ['ExportEntities'] } } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await new Promise((r) => server?.close(r))
  })

  const gql = async (prefix: string, query: string) => {
    const r = await request(`${proxy.url}${prefix}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })
    return { status: r.statusCode, headers: r.headers, text: await r.body.text() }
  }

  const leaked = (text: string) => SECRETS.filter((v) => text.includes(v))

  it.each([
    ['/paths', 'listed response path', '{ entities { id a: ssn b: tin c: phone d: email } }'],
    ['/paths', 'aliased path, fields aliased in a fragment', '{ x: entities { ...F } } fragment F on Entity { id a: ssn b: tin c: phone d: email }'],
    ['/paths', 'aliases in an inline fragment', '{ entities { ... on Entity { id a: ssn b: tin c: phone d: email } } }'],
    ['/names', 'operation name', 'query ExportEntities { entities { id a: ssn b: tin c: phone d: email } }'],
  ])('%s (%s): a field renamed by an alias keeps its field-name hint', async (prefix, _what, query) => {
    const r = await gql(prefix, query)
    expect(r.status).toBe(200)
    // Unaliased, the field names say what the values are; aliased, the bare SSN, the SSN as a
    // number and the national phone number went out readable.
    expect(leaked(r.text)).toEqual([])
    expect(r.text).toContain('"a":"***-**-6789"')
    expect(r.text).toContain('"b":"***-**-9999"')
    expect(r.text).toContain('"c":"+1*******0143"')
    expect(r.headers['x-dlp']).toBe('preset=mask_all; masked=4; tokenized=0; hashed=0; redacted=0; rules=igw-dlp-core@1.2.12')
  })

  it('a batch: the aliases of every operation count; an unaliased export and a non-export are unchanged', async () => {
    const body = JSON.stringify([{ query: '{ other { id } }' }, { query: '{ entities { id a: ssn c: phone } }' }])
    const r = await request(`${proxy.url}/paths/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(leaked(text)).toEqual([])
    expect(text).toContain('"a":"***-**-6789"')
    // Without aliases nothing changes (the field names were read all along).
    const plain = await gql('/paths', '{ entities { id ssn tin phone email } }')
    expect(plain.text).toBe('{"data":{"entities":[{"id":"1","ssn":"***-**-6789","tin":"***-**-9999","phone":"+1*******0143","email":"j***@example.com"}]}}')
    // An alias that names no sensitive field is not read as one (ids stay ids).
    const ids = await gql('/paths', '{ entities { key: id label: name } }')
    expect(ids.text).toBe('{"data":{"entities":[{"key":"1","label":"Jane Roe"}]}}')
    // Not an export: untouched, aliases or not.
    const other = await gql('/paths', '{ other { a: ssn } }')
    expect(other.text).toBe('{"data":{"other":[{"a":"123456789"}]}}')
    // No value reached a log line.
    for (const line of proxy.logs.raw) expect(leaked(line)).toEqual([])
  })
})
