// Plugin uploads through a real control plane: a package refused before its body was read to the
// end must not leave a pooled client's kept-alive connection dead (undici, what Node's fetch
// uses), and a package with a huge bad value must not hold the control plane's thread.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { Pool } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MAX_PACKAGE_BODY_BYTES } from '../../control-plane/plugin-package.ts'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage } from '../helpers/plugins.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-plugin-upload17-'))
const acme = makePublisher('acme', 'acme-2026')
let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane({ dir: scratch, pluginTrust: parsePluginTrust({ keys: [acme.jwk] }, 'plugin-trust.json') })
}, 60_000)
afterAll(async () => {
  await cp?.close()
  rmSync(scratch, { recursive: true, force: true })
})

describe('a refused upload and the connection it came on', () => {
  it('a streamed (chunked) package over the size limit is a 413 that closes the connection, so the pool’s next request is answered', async () => {
    const token = await cp.token({ sub: 'ci-publisher', roles: ['admin', 'plugin-publisher'] })
    // One connection: every request after the upload goes on the socket the upload used.
    // Before, the 413 said keep-alive while the unread rest of the body sat on the socket, and
    // the next request on it got no answer (undici waits 300 s by default; here 15 s) or ECONNRESET.
    const pool = new Pool(cp.url, { connections: 1, headersTimeout: 15_000, bodyTimeout: 15_000 })
    try {
      async function* oversized() {
        yield Buffer.from('{"name":"geo-enrich","version":"1.0.0","publisher":"acme","artifact":"')
        const chunk = Buffer.alloc(1 << 20, 0x41)
        for (let sent = 0; sent <= MAX_PACKAGE_BODY_BYTES; sent += chunk.length) yield chunk
        yield Buffer.from('","signature":"AAAA"}')
      }
      const big = await pool.request({ path: '/v1/plugins', method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: Readable.from(oversized()) })
      const problem = (await big.body.json()) as { status: number; reason: string; detail: string }
      expect(big.statusCode).toBe(413)
      expect(problem).toMatchObject({ status: 413, reason: 'malformed', detail: `malformed plugin package: body larger than ${MAX_PACKAGE_BODY_BYTES} bytes` })

      // The client's next requests are answered: a list and a real upload.
      for (let i = 0; i < 3; i++) {
        const r = await pool.request({ path: '/v1/plugins', method: 'GET', headers: { authorization: `Bearer ${token}` } })
        expect(r.statusCode).toBe(200)
        expect(await r.body.json()).toEqual({ items: [] })
      }
      expect(big.headers.connection).toBe('close')
      const pkg = signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact: Buffer.from('small plugin') })
      const ok = await pool.request({ path: '/v1/plugins', method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(pkg) })
      expect(ok.statusCode).toBe(201)
      // A refusal whose body was read whole keeps the connection.
      expect(ok.headers.connection).not.toBe('close')
      await ok.body.dump()
      const bad = await pool.request({ path: '/v1/plugins', method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...pkg, version: '1.0.1' }) })
      expect(bad.statusCode).toBe(422)
      expect(bad.headers.connection).not.toBe('close')
      await bad.body.dump()

      // The oversized upload was refused the audited way.
      const audit = (await (await cp.api('/v1/audit?resource=plugins')).json()) as { items: { actor: string; action: string; after: { reason: string } }[] }
      expect(audit.items.filter((e) => e.actor === 'ci-publisher')).toEqual([expect.objectContaining({ action: 'plugins.reject', after: expect.objectContaining({ reason: 'malformed' }) })])
    } finally {
      await pool.close()
    }
  }, 90_000)

  it('a package whose version is 400 KB of "a.a.…" is a prompt 400 and the control plane keeps answering', async () => {
    // The refusal text was built by running a quadratic pattern over the whole value: this one
    // request held the event loop (config streams, ACKs, every other request) for most of a minute.
    const token = await cp.token({ sub: 'junk-uploader', roles: ['plugin-publisher'] })
    const pkg = { ...signedPackage(acme, { name: 'geo-enrich', version: '1.0.0', artifact: Buffer.from('x') }), version: 'a.'.repeat(200_000) }
    const upload = cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(pkg), token, signal: AbortSignal.timeout(20_000) })
    const health = await fetch(`${cp.url}/healthz`, { signal: AbortSignal.timeout(20_000) })
    expect(health.status).toBe(200)
    const r = await upload
    const problem = (await r.json()) as { status: number; reason: string; detail: string }
    expect(problem).toMatchObject({ status: 400, reason: 'malformed', detail: expect.stringMatching(/^malformed plugin package: version: Too big: expected string to have <=64 characters, got "a\.a\.a\./) })
    expect(problem.detail.length).toBeLessThanOrEqual(1000)
    const audit = (await (await cp.api('/v1/audit?resource=plugins')).json()) as { items: { actor: string; after: { detail: string } }[] }
    expect(audit.items.filter((e) => e.actor === 'junk-uploader').map((e) => e.after.detail)).toEqual([problem.detail])
  }, 90_000)
})
