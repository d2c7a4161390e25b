// The control plane's signing key file (--signing-key): created once, atomically, never replaced
// by a second process starting at the same time; a file that is not an ed25519 private key stops
// the start with an error naming the file and what it holds. Real files, real child processes.
import { spawn } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { keyIdOf, loadOrCreateSigningKey, loadPublicKey } from '../../control-plane/signing.ts'

const dirs: string[] = []
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'igw-signing16-'))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

const SIGNING_TS = new URL('../../control-plane/signing.ts', import.meta.url).pathname

/** A process that waits for the wall clock to reach `at`, loads-or-creates the key, and prints its id (or the error). */
function racer(path: string, at: number): Promise<string> {
  const script = `
    const { loadOrCreateSigningKey } = await import(${JSON.stringify(SIGNING_TS)})
    while (Date.now() < ${at}) {}
    try { process.stdout.write('id:' + loadOrCreateSigningKey(${JSON.stringify(path)}).keyId) }
    catch (err) { process.stdout.write('error:' + err.message) }
  `
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.on('error', reject)
    child.on('exit', () => resolve(out))
  })
}

describe('creating the signing key', () => {
  it('processes starting at the same moment on one key path all end up with the key the file holds', async () => {
    for (let round = 0; round < 4; round++) {
      const dir = tempDir()
      const path = join(dir, 'keys', 'signing-key.pem')
      // Start together: each process spins until the same instant, well after node has started.
      const at = Date.now() + 1_500
      const ids = await Promise.all(Array.from({ length: 6 }, () => racer(path, at)))
      const fileId = keyIdOf(loadPublicKey(readFileSync(path, 'utf8')))
      expect(ids, `round ${round}`).toEqual(ids.map(() => `id:${fileId}`))
      expect(statSync(path).mode & 0o777).toBe(0o600)
      // No temporary file is left beside it.
      expect(readdirSync(join(dir, 'keys'))).toEqual(['signing-key.pem'])
    }
  }, 60_000)

  it('an existing key is loaded, not replaced', () => {
    const path = join(tempDir(), 'signing-key.pem')
    const first = loadOrCreateSigningKey(path)
    const text = readFileSync(path, 'utf8')
    expect(loadOrCreateSigningKey(path).keyId).toBe(first.keyId)
    expect(readFileSync(path, 'utf8')).toBe(text)
  })
})

describe('a signing key file that is not an ed25519 private key', () => {
  const dir = tempDir()
  const write = (name: string, text: string): string => {
    const p = join(dir, name)
    writeFileSync(p, text, { mode: 0o600 })
    return p
  }

  it('an RSA key: the error names the file and the key type', () => {
    const rsa = write('rsa.pem', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
    expect(() => loadOrCreateSigningKey(rsa)).toThrow(`signing key ${rsa} holds a key of type rsa: expected an ed25519 private key in PKCS#8 PEM`)
  })

  it('the public half: the error says the private key is needed', () => {
    const pub = write('pub.pem', generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString())
    expect(() => loadOrCreateSigningKey(pub)).toThrow(`signing key ${pub} holds a public key: the control plane signs, so it needs the private key`)
  })

  it('an empty file (a half-made key, an empty Secret) and garbage: named, not a decoder error', () => {
    const empty = write('empty.pem', '')
    expect(() => loadOrCreateSigningKey(empty)).toThrow(`signing key ${empty} is empty`)
    const junk = write('junk.pem', 'not a key\n')
    expect(() => loadOrCreateSigningKey(junk)).toThrow(new RegExp(`^signing key ${junk} is not a usable private key \\(.*\\): expected an ed25519 private key`))
  })

  it('a directory where the file should be: named', () => {
    expect(() => loadOrCreateSigningKey(dir)).toThrow(`signing key ${dir}: cannot read it:`)
  })

  it('`igw audit verify` given an RSA key is told so, instead of reporting every entry as forged', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 })
    expect(() => loadPublicKey(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())).toThrow('the control plane key must be ed25519, got a key of type rsa')
  })
})
