// Plugin trust and the publisher's documented recipe:
// - a trust-file kid with a NUL made every upload that key signed a bare database 400 (not a
//   plugins.reject, not counted); one with a lone surrogate was answered as one kid by the 201 and
//   listed as another (U+FFFD) ever after. Both stop the load now, naming the key.
// - one key listed for two publishers let its holder publish under either name (and take the
//   other's plugin names first): refused at load, as "a key belongs to one publisher" says.
// - the signing recipe in docs/control-plane.md passed the base64 artifact as one command-line
//   argument, which Linux caps at 128 KiB: any plugin over ~96 KB failed with "Argument list too
//   long". The recipe is run here as written, on a 300 KB artifact, against a real control plane.
import { execFile } from 'node:child_process'
import { createPublicKey, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../config/load.ts'
import { parsePluginTrust } from '../../control-plane/plugin-trust.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher } from '../helpers/plugins.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-plugin-recipe24p-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

function problemsOf(keys: unknown[]): string[] {
  try {
    parsePluginTrust({ keys }, 'plugin-trust.json')
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return (err as ConfigError).problems
  }
  return []
}

describe('plugin trust file', () => {
  it.each([
    ['a NUL', 'acme\u00002026', /^keys\[1\]\.kid: must not contain a NUL character/],
    ['a lone surrogate', 'acme-\ud800', /^keys\[1\]\.kid: must be valid Unicode \(it holds a lone UTF-16 surrogate\)/],
  ])('a kid with %s stops the load, naming the key', (_what, kid, why) => {
    expect(problemsOf([makePublisher('globex').jwk, makePublisher('acme', kid).jwk])).toEqual([expect.stringMatching(why)])
  })

  it('one key listed for two publishers stops the load; the same key under two kids of one publisher does not', () => {
    const acme = makePublisher('acme', 'acme-2026')
    expect(problemsOf([acme.jwk, { ...acme.jwk, kid: 'globex-2026', publisher: 'globex' }])).toEqual([
      'keys[1] (kid "globex-2026", publisher "globex").x: the same key is listed for publisher "acme" (keys[0]); a key signs for one publisher only',
    ])
    const t = parsePluginTrust({ keys: [acme.jwk, { ...acme.jwk, kid: 'acme-renamed' }, makePublisher('globex').jwk] }, 'plugin-trust.json')
    expect(t.get('acme')?.map((k) => k.keyId)).toEqual(['acme-2026', 'acme-renamed'])
    expect(t.get('globex')).toHaveLength(1)
  })
})

describe('the documented signing recipe', () => {
  it('uploads a 300 KB plugin as written', async () => {
    const doc = readFileSync(join(import.meta.dirname, '../../docs/control-plane.md'), 'utf8')
    const block = /A publisher signs it with any ed25519 tool[^\n]*\n\n```sh\n([\s\S]*?)```/.exec(doc)?.[1]
    expect(block).toBeDefined()
    const lines = block!.replace(/\\\n/g, ' ').split('\n').filter((l) => l.trim() !== '')
    const curl = lines.findIndex((l) => l.startsWith('curl '))
    expect(curl).toBeGreaterThan(0)
    writeFileSync(join(scratch, 'geo.wasm'), randomBytes(300 * 1024))
    mkdirSync(join(scratch, 'cp'), { recursive: true })
    // Asynchronously: the control plane answering curl runs in this process.
    const run = (script: string, env: NodeJS.ProcessEnv = {}) =>
      promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], { cwd: scratch, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 10_000 })

    await run(lines.slice(0, curl).join('\n'))
    const publicJwk = createPublicKey(readFileSync(join(scratch, 'acme-2026.pem'))).export({ format: 'jwk' })
    const cp: TestControlPlane = await startTestControlPlane({ dir: join(scratch, 'cp'), pluginTrust: parsePluginTrust({ keys: [{ ...publicJwk, kid: 'acme-2026', publisher: 'acme' }] }, 'plugin-trust.json') })
    try {
      const token = await cp.token({ sub: 'acme-ci', roles: ['plugin-publisher'] })
      const upload = await run(`${lines[curl]!.replace('http://cp:7070', cp.url)} --silent --show-error --output upload.json --write-out '%{http_code}'`, { PUBLISHER_JWT: token })
      expect(upload.stdout).toBe('201')
      expect(JSON.parse(readFileSync(join(scratch, 'upload.json'), 'utf8'))).toMatchObject({ name: 'geo-enrich', version: '1.2.3', publisher: 'acme', keyId: 'acme-2026', size: 300 * 1024, trust: 'trusted' })
    } finally {
      await cp.close()
    }
  }, 30_000)
})
