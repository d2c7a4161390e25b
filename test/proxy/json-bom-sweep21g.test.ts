// A GraphQL POST body that starts with a UTF-8 byte order mark (Windows tooling writes one):
// RFC 8259 §8.1 lets a JSON parser ignore it, and graphql-yoga (TextDecoder) and body-parser do,
// so a client that works against the backend directly was refused 400 "Malformed JSON" behind
// the gateway. Through a real igw, the graphql-yoga demo backend and a recording backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startDemoBackend, startRawBackend, type DemoBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const BOM = Buffer.from([0xef, 0xbb, 0xbf])

let demo: DemoBackend
let recorder: RawBackend
let bodies: Buffer[] = []
let proxy: TestProxy
beforeAll(async () => {
  demo = await startDemoBackend()
  recorder = await startRawBackend((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks))
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('[{"data":{"hello":"a"}},{"data":{"hello":"b"}}]')
    })
  })
  proxy = await startTestProxy({
    mode: 'ingress',
    routes: [
      { name: 'yoga', match: { pathPrefix: '/graphql' }, upstream: demo.url, type: 'graphql' },
      { name: 'rec', match: { pathPrefix: '/rec' }, upstream: recorder.url, type: 'graphql', batching: { enabled: true } },
    ],
  } as never)
})
afterAll(async () => {
  await proxy?.close()
  await recorder?.close()
  await demo?.close()
})

describe('a JSON body with a UTF-8 byte order mark', () => {
  it('is read as the JSON after it, and the backend answers it', async () => {
    const body = Buffer.concat([BOM, Buffer.from('{"query":"{ hello(name: \\"bom\\") }"}')])
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    expect(res.statusCode).toBe(200)
    expect(await res.body.json()).toEqual({ data: { hello: 'Hello, bom!' } })
  })

  it('a batch too; the backend gets the JSON without the mark', async () => {
    bodies = []
    const json = '[{"query":"{ hello }"},{"query":"{ hello(name: \\"b\\") }"}]'
    const res = await request(`${proxy.url}/rec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat([BOM, Buffer.from(json)]) })
    expect(res.statusCode).toBe(200)
    await res.body.dump()
    expect(bodies.map((b) => b.toString('utf8'))).toEqual([json])
  })

  it('a mark anywhere else is still malformed JSON', async () => {
    const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat([Buffer.from(' '), BOM, Buffer.from('{"query":"{ hello }"}')]) })
    expect(res.statusCode).toBe(400)
    await res.body.dump()
  })
})
