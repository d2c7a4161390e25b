// Policy bundles that do not load: a tarball cut short (a bundle still being copied into place, a
// full disk) must refuse the bundle with an error naming the file — the config reload fails and
// the running config goes on — not throw an uncaught exception that takes the worker down.
// Real opa CLI bundle, real proxy, real opa-wasm.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { bundlePath } from '../../policies/catalog.ts'
import { loadPolicyBundle } from '../../policies/engine.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const dir = mkdtempSync(join(tmpdir(), 'igw-bundle-load-sweep17-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** The committed dlp bundle with its tar cut inside policy.wasm, gzipped again (a valid gzip stream). */
function truncatedBundle(name: string): string {
  const tar = gunzipSync(readFileSync(bundlePath('dlp')))
  const out = join(dir, name)
  writeFileSync(out, gzipSync(tar.subarray(0, tar.length - 1500)))
  return out
}

describe('a policy bundle whose tar is cut short', () => {
  it('loadPolicyBundle rejects with the file and the cause', async () => {
    const bundle = truncatedBundle('cut.tar.gz')
    await expect(loadPolicyBundle(bundle)).rejects.toThrow(`${bundle}: not a readable policy bundle (a .tar.gz built by \`igw policy build\`): Unexpected end of data`)
  })

  describe('named by a config reload', () => {
    let raw: RawBackend
    let proxy: TestProxy
    const good = join(dir, 'export.tar.gz')
    const docFor = (bundle: string) => ({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      workers: 1,
      mode: 'ingress' as const,
      dlp: { keyring: { file: join(dir, 'keys', 'ring.json') }, policy: { bundle, allowedPresets: ['tokenize_strict'] } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http' as const, filters: [{ name: 'dlp' as const, preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })

    beforeAll(async () => {
      raw = await startRawBackend((_req: IncomingMessage, res: ServerResponse) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"email":"jane@corp.com"}')
      })
      copyFileSync(bundlePath('dlp'), good)
      const { listen: _l, admin: _a, workers: _w, ...doc } = docFor(good)
      proxy = await startTestProxy(doc)
    })
    afterAll(async () => {
      await proxy?.close()
      await raw?.close()
    })

    it('fails the reload naming the bundle; the same worker serves on with the last good policy', async () => {
      const exportOk = async () => {
        const res = await request(`${proxy.url}/export/a.json`)
        const body = (await res.body.json()) as { email: string }
        return { status: res.statusCode, tokenized: body.email?.startsWith('tok_email_') }
      }
      expect(await exportOk()).toEqual({ status: 200, tokenized: true })
      const worker = proxy.threads()[0]
      expect(worker).toBeDefined()
      const bad = truncatedBundle('cut-reload.tar.gz')
      const r = await proxy.applyConfig(validateConfig(docFor(bad)))
      expect(r.ok).toBe(false)
      expect(r.error).toContain(bad)
      expect(r.error).toContain('not a readable policy bundle')
      // The worker thread was not lost (before: an uncaught 'error' on the tar entry stream
      // crashed it, and the supervisor had to start a new one).
      expect(proxy.threads()[0]).toBe(worker)
      expect(proxy.logs.find('worker thread exited; restarting')).toHaveLength(0)
      expect(await exportOk()).toEqual({ status: 200, tokenized: true })
    })
  })
})
