// The GraphQL admin endpoint against a real control plane over HTTP, with a pooled undici client
// (what Node's fetch uses) holding one kept-alive connection.
import { Readable } from 'node:stream'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_GRAPHQL_LIMITS } from '../../control-plane/graphql-limits.ts'
import { capturingLogger, metricSample, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
let viewer: string
beforeAll(async () => {
  cp = await startTestControlPlane()
  viewer = await cp.token({ sub: 'vera', roles: ['viewer'] })
}, 60_000)
afterAll(async () => {
  await cp?.close()
})

describe('a GraphQL request refused before its body was read to the end', () => {
  it('a chunked body over the limit is a 413 that closes the connection, so the pool’s next request is answered', async () => {
    // One connection: every request after the refused one goes on the socket it used. Before, the
    // 413 said keep-alive while the unread rest of the body sat on the socket, and the next
    // request on it failed with ECONNRESET.
    const pool = new Pool(cp.url, { connections: 1, headersTimeout: 15_000, bodyTimeout: 15_000 })
    const headers = { authorization: `Bearer ${viewer}`, 'content-type': 'application/json' }
    try {
      async function* oversized() {
        yield Buffer.from('{"query":"{ __typename }","variables":{"pad":"')
        const chunk = Buffer.alloc(1 << 20, 0x41)
        for (let sent = 0; sent <= ADMIN_GRAPHQL_LIMITS.maxBodyBytes + (1 << 20); sent += chunk.length) yield chunk
        yield Buffer.from('"}}')
      }
      const big = await pool.request({ path: '/graphql', method: 'POST', headers, body: Readable.from(oversized()) })
      const body = (await big.body.json()) as { errors: { extensions: { code: string; limit: string } }[] }
      expect(big.statusCode).toBe(413)
      expect(body.errors[0]!.extensions).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', limit: 'bodyBytes' })

      for (let i = 0; i < 3; i++) {
        const r = await pool.request({ path: '/graphql', method: 'POST', headers, body: '{"query":"{ __typename }"}' })
        expect(r.statusCode).toBe(200)
        expect(await r.body.json()).toEqual({ data: { __typename: 'Query' } })
        // A request whose body was read whole keeps its connection.
        expect(r.headers.connection).not.toBe('close')
      }
      expect(big.headers.connection).toBe('close')

      // A 415 answered without reading the body closes the connection too, rather than leaving
      // (or reading to discard) whatever the client still sends.
      const form = await pool.request({ path: '/graphql', method: 'POST', headers: { ...headers, 'content-type': 'text/plain' }, body: Readable.from(oversized()) })
      expect(form.statusCode).toBe(415)
      expect(form.headers.connection).toBe('close')
      await form.body.dump()
      const after = await pool.request({ path: '/graphql', method: 'POST', headers, body: '{"query":"{ __typename }"}' })
      expect(after.statusCode).toBe(200)
      expect(await after.body.json()).toEqual({ data: { __typename: 'Query' } })
    } finally {
      await pool.close()
    }
  }, 90_000)
})

describe('GraphQL before the control plane has a config document', () => {
  it('quotas answers what REST answers (503, "no config yet"), not a masked unexpected error', async () => {
    const log = capturingLogger()
    const empty = await startTestControlPlane({ seed: null, logger: log.logger })
    try {
      const admin = await empty.token({ sub: 'ada', roles: ['admin'] })
      const rest = await empty.api('/v1/tenants/acme/quotas', { token: admin })
      expect(rest.status).toBe(503)
      const restDetail = ((await rest.json()) as { detail: string }).detail

      const res = await empty.api('/graphql', { method: 'POST', token: admin, body: JSON.stringify({ query: '{ quotas(tenant: "acme") { kind limitPerDay } }' }) })
      const body = (await res.json()) as { data: unknown; errors: { message: string; path: string[]; extensions: { code: string } }[] }
      expect(res.status).toBe(503)
      expect(body.data).toBeNull()
      expect(body.errors).toEqual([expect.objectContaining({ message: restDetail, path: ['quotas'], extensions: expect.objectContaining({ code: 'SERVICE_UNAVAILABLE' }) })])
      expect(restDetail).toMatch(/no config yet/)

      // Not a bug of the control plane: neither counted nor logged as an unexpected error.
      const text = await (await fetch(`${empty.metricsUrl}/metrics`)).text()
      expect(metricSample(text, 'igw_control_plane_graphql_unexpected_errors_total')).toBe(0)
      expect(log.lines.filter((l) => l.msg === 'graphql request failed with an unexpected error')).toEqual([])
    } finally {
      await empty.close()
    }
  }, 60_000)
})
