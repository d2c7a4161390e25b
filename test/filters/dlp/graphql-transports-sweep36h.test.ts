// DLP sweep 36h: a GraphQL export operation asked in an incremental transport. graphql-yoga (the
// demo backend) answers a query in the transport the client's Accept asks for: GraphQL over SSE
// (`text/event-stream`, sent with `Content-Encoding: none`) or incremental delivery
// (`multipart/mixed`). Read as an unknown content coding, the SSE answer was "uninspectable", so
// under `uninspectable: pass` every e-mail, phone number and SSN of the export left readable, and
// under `block` the 403 blamed a content encoding "none". Real proxy (worker thread), the real
// demo backend (graphql-yoga), undici.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { sampleEntity, startDemoBackend, type DemoBackend } from '../../../proxy/demo-backend.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const QUERY = 'query ExportEntities { entities(first: 3) { id email phone ssn } }'
const RAW = [1, 2, 3].flatMap((i) => {
  const e = sampleEntity(i)
  return [e.email, e.phone, e.ssn]
})

describe('dlp: GraphQL exports asked as SSE or multipart (sweep 36h)', () => {
  let backend: DemoBackend
  const proxies: Record<'pass' | 'block' | 'path', TestProxy> = {} as never

  beforeAll(async () => {
    backend = await startDemoBackend({ port: 0 })
    for (const mode of ['pass', 'block', 'path'] as const) {
      const uninspectable = mode === 'block' ? 'block' : 'pass'
      // `path`: the GraphQL endpoint itself listed as an export path (every operation an export).
      const exports = mode === 'path' ? { paths: [{ prefix: '/graphql', format: 'json' as const }] } : { graphql: { operations: ['ExportEntities'], responsePaths: ['entities'] } }
      const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-sweep36h-')), 'keyring.json')
      proxies[mode] = await startTestProxy({
        mode: 'ingress',
        dlp: {
          presets: { tokenize_all: { email: 'tokenize', phone_e164: 'hash', ssn_us: 'tokenize' } },
          keyring: { file: keyring },
          policy: { enabled: true, allowedPresets: ['tokenize_all'] },
        },
        routes: [
          {
            name: 'g',
            match: { pathPrefix: '/graphql' },
            upstream: backend.url,
            type: 'graphql',
            filters: [{ name: 'dlp', preset: 'tokenize_all', uninspectable, exports }],
          },
        ],
      })
    }
  }, 60_000)

  afterAll(async () => {
    await proxies.pass?.close()
    await proxies.block?.close()
    await proxies.path?.close()
    await backend?.close()
  })

  async function post(p: TestProxy, accept: string): Promise<{ status: number; type: string; text: string }> {
    const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify({ query: QUERY }) })
    return { status: r.statusCode, type: String(r.headers['content-type']), text: await r.body.text() }
  }

  it.each(['pass', 'path'] as const)('the control (%s): asked as JSON, every value is tokenized or hashed', async (mode) => {
    const r = await post(proxies[mode], 'application/json')
    expect(r.status).toBe(200)
    for (const v of RAW) expect(r.text).not.toContain(v)
    expect(r.text.match(/tok_email_/g)).toHaveLength(3)
    expect(r.text.match(/hsh_phone_e164_/g)).toHaveLength(3)
    expect(r.text.match(/tok_ssn_us_/g)).toHaveLength(3)
  })

  const cases = ['text/event-stream', 'multipart/mixed'].flatMap((accept) => (['pass', 'block', 'path'] as const).map((mode) => [accept, mode] as const))
  it.each(cases)('asked as %s (%s), the export is refused even under uninspectable: pass (SSE leaked every value)', async (accept, mode) => {
    {
      const p = proxies[mode]
      const r = await post(p, accept)
      for (const v of RAW) expect(r.text).not.toContain(v)
      // An SSE-only client gets the refusal as a GraphQL-over-SSE `next` event (igw's errors do so).
      const sse = accept === 'text/event-stream'
      expect(r.status).toBe(sse ? 200 : 403)
      expect(r.type).toContain(sse ? 'text/event-stream' : 'json')
      const json = sse ? /^data: (.+)$/m.exec(r.text)![1]! : r.text
      const body = JSON.parse(json) as { errors: { message: string; extensions: { code: string } }[] }
      expect(body.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
      // The transport, not a content encoding "none", is what DLP cannot read.
      expect(body.errors[0]!.message).toBe(`export has content type "${accept}", which DLP cannot inspect; request a GraphQL export with Accept: application/json`)
      await expect.poll(() => p.logs.find('dlp export').some((l) => l.outcome === 'uninspectable' && typeof l.stop === 'object' && JSON.stringify(l.stop).includes(accept)), { timeout: 10_000 }).toBe(true)
      for (const line of p.logs.raw) for (const v of RAW) expect(line).not.toContain(v)
    }
  })
})
