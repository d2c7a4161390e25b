// Sweep 28h: a QoS shed answer carried only `tier` and `retryAfterSeconds` in its extensions,
// while every other quota refusal (429s, the fail-closed 503) names the `kind` of traffic refused
// (docs/quota.md: "the same data in the GraphQL error"): a client or dashboard keyed on
// extensions.kind lost shed requests. Real proxy, a held gold request filling maxInFlight.
import type { ServerResponse } from 'node:http'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy } from '../../helpers/proxy.ts'
import { waitUntil } from '../../helpers/wait.ts'

const held: ServerResponse[] = []
let be: RawBackend
beforeAll(async () => {
  be = await startRawBackend((_req, res) => void held.push(res))
})
afterAll(async () => {
  await be?.close()
})

function call(url: string, tenant: string) {
  return request(`${url}/ingest`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant }, body: '{"query":"{ a }"}' })
}

describe('QoS shed answers (sweep 28h)', () => {
  it('name the kind of traffic shed, as the other quota refusals do', async () => {
    const p = await startTestProxy({
      tenants: { g: { tier: 'gold' }, b: { tier: 'bronze' } },
      quotas: { qos: { maxInFlight: 1, retryAfterSeconds: 3 } },
      routes: [{ name: 'ingest', match: { pathPrefix: '/ingest' }, upstream: be.url, filters: [{ name: 'tenant' }, { name: 'quota', kind: 'ingest' }] }],
    })
    try {
      const gold = call(p.url, 'g')
      await waitUntil(() => held.length === 1, 5_000, 'the gold request in flight')
      const shed = await call(p.url, 'b')
      expect(shed.statusCode).toBe(503)
      expect(shed.headers['retry-after']).toBe('3')
      const body = (await shed.body.json()) as { errors: { extensions: Record<string, unknown> }[] }
      expect(body.errors[0]!.extensions).toEqual({ code: 'OVERLOADED', kind: 'ingest', tier: 'bronze', retryAfterSeconds: 3 })
      for (const res of held.splice(0)) res.end('{"data":{"a":1}}')
      expect((await gold).statusCode).toBe(200)
    } finally {
      for (const res of held.splice(0)) res.end('{}')
      await p.close()
    }
  })
})
