// A REST refusal sent before the request body was read to its end (413 on a streamed body) said
// keep-alive while the rest of the body sat unread on the socket; the next request a pooled
// client sent on that connection got no answer (undici waits 300 s by default) or ECONNRESET.
// Now such a refusal says `Connection: close`, and the pool's next request is answered.
import { Readable } from 'node:stream'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_BODY } from '../../control-plane/http-kit.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

describe('a refused streamed body and the connection it came on', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('PUT /v1/tenants/x with a chunked body over the limit: 413 with Connection: close, then the next requests are answered', { timeout: 60_000 }, async () => {
    const token = await cp.token({ sub: 'ops', roles: ['admin'] })
    const pool = new Pool(cp.url, { connections: 1, headersTimeout: 15_000, bodyTimeout: 15_000 })
    try {
      async function* oversized() {
        yield Buffer.from('{"tier":"gold","note":"')
        const chunk = Buffer.alloc(1 << 20, 0x41)
        for (let sent = 0; sent <= MAX_BODY; sent += chunk.length) yield chunk
        yield Buffer.from('"}')
      }
      const big = await pool.request({ path: '/v1/tenants/acme', method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: Readable.from(oversized()) })
      await big.body.dump()
      expect(big.statusCode).toBe(413)
      expect(big.headers.connection).toBe('close')
      for (let i = 0; i < 3; i++) {
        const r = await pool.request({ path: '/v1/tenants', method: 'GET', headers: { authorization: `Bearer ${token}` } })
        await r.body.dump()
        expect(r.statusCode).toBe(200)
      }
      // a refusal after the whole body was read keeps the connection
      const bad = await pool.request({ path: '/v1/tenants/acme', method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"tier":' })
      await bad.body.dump()
      expect(bad.statusCode).toBe(400)
      expect(bad.headers.connection).not.toBe('close')
    } finally {
      await pool.close()
    }
  })
})
