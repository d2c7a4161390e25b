// A GraphQL POST with a compressed body (Content-Encoding: gzip, as some clients send large
// queries) was parsed as JSON as it came and refused with 400 "Malformed JSON": the client was
// told its JSON was wrong. It is a 415 naming the content coding, with Accept-Encoding: identity
// (RFC 9110 §15.5.16), and nothing reaches the backend; an identity coding still passes.
import { gzipSync } from 'node:zlib'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('a compressed GraphQL request body', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    demo = await startDemoBackend()
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: demo.url, type: 'graphql' }] })
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
  })
  const body = JSON.stringify({ query: '{ hello }' })

  it('gzip: 415 UNSUPPORTED_MEDIA_TYPE naming the coding, Accept-Encoding: identity', async () => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync(body) })
    expect(r.statusCode).toBe(415)
    expect(r.headers['accept-encoding']).toBe('identity')
    const json = (await r.body.json()) as { errors: { message: string; extensions: { code: string } }[] }
    expect(json.errors[0]!.extensions.code).toBe('UNSUPPORTED_MEDIA_TYPE')
    expect(json.errors[0]!.message).toContain('Content-Encoding "gzip" is not supported')
  })

  it('identity: served', async () => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'identity' }, body })
    expect(r.statusCode).toBe(200)
    expect(await r.body.json()).toEqual({ data: { hello: expect.any(String) } })
  })
})
