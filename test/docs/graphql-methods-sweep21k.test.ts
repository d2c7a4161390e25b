// (Sweep 36c: PUT and DELETE are relayed for graphql-sse's single connection mode; PATCH is refused.)
// README's `routes[].type` row said a graphql route takes "GET/POST only (405 otherwise)"; it
// relays HEAD as well (read as a GET) and its 405 names `Allow: GET, HEAD, POST, OPTIONS`. The row
// must name the Allow header a running proxy sends, and HEAD must reach the backend. README's
// error paragraph did not say that errors are typed by Accept (graphql-response+json).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { ROOT, startTestProxy, type TestProxy } from '../helpers/proxy.ts'

let backend: RawBackend
let proxy: TestProxy
const seen: string[] = []

beforeAll(async () => {
  backend = await startRawBackend((req, res) => {
    seen.push(`${req.method} ${req.url}`)
    res.setHeader('content-type', 'application/json')
    res.end('{"data":{"hello":"x"}}')
  })
  proxy = await startTestProxy({ routes: [{ name: 'gql', upstream: backend.url }] })
})

afterAll(async () => {
  await proxy?.close()
  await backend?.close()
})

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
const typeRow = readme.split('\n').find((l) => l.startsWith('| `routes[].type` |'))!

describe('README routes[].type: the methods a graphql route takes', () => {
  it('names the Allow header of its 405', async () => {
    const res = await fetch(`${proxy.url}/graphql`, { method: 'PATCH' })
    await res.text()
    expect(res.status).toBe(405)
    const allow = res.headers.get('allow')!
    expect(allow).toContain('HEAD')
    expect(typeRow).toContain(`\`Allow: ${allow}\``)
  })

  it('HEAD is relayed to the backend, as the row says', async () => {
    const res = await fetch(`${proxy.url}/graphql?query=%7Bhello%7D`, { method: 'HEAD' })
    expect(res.status).toBe(200)
    expect(seen).toContain('HEAD /graphql?query=%7Bhello%7D')
    expect(typeRow).toMatch(/GET, HEAD \(read as a GET\) and POST/)
  })
})

describe('README errors paragraph', () => {
  it('names the media type a client preferring graphql-response+json gets', async () => {
    const res = await fetch(`${proxy.url}/graphql`, { method: 'PATCH', headers: { accept: 'application/graphql-response+json, application/json;q=0.9' } })
    await res.text()
    const type = res.headers.get('content-type')!.split(';')[0]!
    expect(type).toBe('application/graphql-response+json')
    const paragraph = /^- Errors are GraphQL-shaped JSON[\s\S]*?(?=\n- )/m.exec(readme)![0]
    expect(paragraph).toContain(`\`${type}\``)
  })
})
