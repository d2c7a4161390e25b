// DLP sweep 31f: with exports.graphql.responsePaths only the listed subtrees of `data` and the
// `errors` were transformed; the response's top-level `extensions` (debug and validation details,
// a gateway's subgraph details) was left unread, so a value a server echoed there went out as it
// was. It is in scope now, like `errors`. Driven through graphqlExportMatch and ExportSession,
// then through a real proxy and a real graphql-yoga backend whose plugin echoes the variables.
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'graphql'
import { createSchema, createYoga, type Plugin } from 'graphql-yoga'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ExportSession } from '../../../filters/dlp/export-session.ts'
import { graphqlExportMatch } from '../../../filters/dlp/graphql-scope.ts'
import { BUILTIN_RULE_PACK, RulePack } from '../../../filters/dlp/rule-pack.ts'
import { compileActions, ExportScanner } from '../../../filters/dlp/scanner.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const pack = RulePack.load(BUILTIN_RULE_PACK)

async function transform(query: string, response: unknown): Promise<unknown> {
  const m = graphqlExportMatch(parse(query), undefined, [['entities']])
  expect(m.matched).toBe(true)
  const scanner = new ExportScanner(pack, compileActions(pack, { email: 'mask', ssn_us: 'mask', phone_e164: 'mask' }), undefined)
  const session = new ExportSession(scanner, { format: 'json', scope: m.paths === undefined ? undefined : { paths: m.paths }, maxTokenChars: 1 << 20, csvHeader: true, csvDelimiter: ',', judge: undefined })
  const out = [(await session.write(Buffer.from(JSON.stringify(response))))?.toString() ?? '', (await session.end())?.toString() ?? '']
  expect(session.stop).toBeUndefined()
  return JSON.parse(out.join(''))
}

describe('GraphQL exports: the top-level extensions are read like errors (sweep 31f)', () => {
  it('a value echoed in extensions is masked; data outside the listed paths is not', async () => {
    const out = await transform('{ entities { email } me { email } }', {
      data: { entities: [{ email: 'jane@corp.com' }], me: { email: 'me@corp.com' } },
      errors: [{ message: 'ssn 123-45-6789 rejected', extensions: { input: 'a@corp.com' } }],
      extensions: { debug: { variables: { ssn: '123-45-6789', contact: 'jane@corp.com' } }, cost: 12 },
    })
    expect(out).toEqual({
      data: { entities: [{ email: 'j***@corp.com' }], me: { email: 'me@corp.com' } },
      errors: [{ message: 'ssn ***-**-6789 rejected', extensions: { input: 'a***@corp.com' } }],
      extensions: { debug: { variables: { ssn: '***-**-6789', contact: 'j***@corp.com' } }, cost: 12 },
    })
  })

  it('the path budget leaves room for errors and extensions: past 29 reached paths, the whole response', () => {
    const aliases = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `a${i}: entities { id }`).join(' ')} }`
    const p28 = graphqlExportMatch(parse(aliases(28)), undefined, [['entities']]).paths
    // the configured path, 28 aliases, errors, extensions: 31, each tracked
    expect(p28).toHaveLength(31)
    expect(p28!.at(-1)).toEqual(['extensions'])
    expect(graphqlExportMatch(parse(aliases(29)), undefined, [['entities']]).paths).toBeUndefined()
  })
})

describe('GraphQL extensions through the proxy (sweep 31f)', () => {
  let server: Server
  let proxy: TestProxy
  const dir = mkdtempSync(join(tmpdir(), 'igw-dlp-31f-ext-'))
  beforeAll(async () => {
    // A debugging plugin, as servers have: the operation's variables echoed in `extensions`.
    const echo: Plugin = {
      onExecute: ({ args }) => ({
        onExecuteDone: ({ result, setResult }) => {
          if (!('data' in result)) return
          setResult({ ...result, extensions: { ...result.extensions, debug: { variables: args.variableValues } } })
        },
      }),
    }
    const yoga = createYoga({
      plugins: [echo],
      schema: createSchema({
        typeDefs: 'type Entity { id: ID!, email: String } type Query { entities(ssn: String): [Entity!]! }',
        resolvers: { Query: { entities: () => [{ id: '1', email: 'jane@corp.com' }] } },
      }),
    })
    server = createServer((req, res) => void yoga(req, res))
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    proxy = await startTestProxy({
      dlp: { keyring: { file: join(dir, 'keyring.json') }, presets: { m: { email: 'mask', ssn_us: 'mask' } }, policy: { enabled: false } },
      routes: [
        {
          name: 'gql',
          match: { pathPrefix: '/' },
          upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          type: 'graphql',
          timeouts: { totalMs: 0 },
          filters: [{ name: 'dlp', preset: 'm', exports: { graphql: { responsePaths: ['entities'] } } }],
        },
      ],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await new Promise((r) => server?.close(r))
    rmSync(dir, { recursive: true, force: true })
  })

  it('the echoed SSN leaves masked, with the export', async () => {
    const body = JSON.stringify({ query: 'query Q($ssn: String) { entities(ssn: $ssn) { id email } }', variables: { ssn: '123-45-6789' } })
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    const text = await r.body.text()
    expect(r.statusCode).toBe(200)
    expect(JSON.parse(text)).toEqual({ data: { entities: [{ id: '1', email: 'j***@corp.com' }] }, extensions: { debug: { variables: { ssn: '***-**-6789' } } } })
    expect(r.headers['x-dlp']).toContain('masked=2')
    for (const line of proxy.logs.raw) expect(line).not.toContain('123-45-6789')
  })
})
