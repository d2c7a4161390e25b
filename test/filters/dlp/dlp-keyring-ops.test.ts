// Operating the DLP keyring under a real proxy: a keyring file that breaks while exports run is
// counted (igw_dlp_keyring_reload_failures_total), logged once per window rather than once per
// 2 s check, and never stops exports (they keep the last good keys); a keyring file that group
// or others can read is loaded anyway, with one warning naming its path and mode.
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest'
import type { GatewayConfigInput } from '../../../config/schema.ts'
import { ensureKeyringFile, exposedMode, LocalKeyring, serializeKeyring, type KeyEntry, type KeyringSnapshot } from '../../../filters/dlp/keyring.ts'
import { detokenize } from '../../../filters/dlp/tokenizer.ts'
import { startRawBackend, type RawBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { sleep, waitUntil } from '../../helpers/wait.ts'

const FAILED = 'DLP keyring reload failed; keeping the last good keyring'
const RECOVERED = 'DLP keyring reloaded after failures'
const METRIC = 'igw_dlp_keyring_reload_failures_total'
/** Past the keyring's 2 s check interval (hard-coded: KEYRING_CHECK_MS). */
const PAST_CHECK_MS = 2_100
/** Until a check the exports start (at most 2 s after the last one) has landed, with room for a loaded host. */
const CHECK_WAIT_MS = 10_000
const dirs: string[] = []
const json = (v: unknown) => JSON.stringify(v)

function ringDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'igw-dlp-keyring-ops-'))
  dirs.push(d)
  return d
}

function withKey(ring: KeyringSnapshot, id: string, active = id): KeyringSnapshot {
  const key: KeyEntry = { id, secret: new Uint8Array(randomBytes(32)), created: '2026-11-26T00:00:00.000Z' }
  return { active, keys: new Map([...ring.keys, [id, key]]) }
}

let raw: RawBackend
let seq = 0

beforeAll(async () => {
  raw = await startRawBackend((req, res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' })
    res.end(`${json({ email: `${req.url!.split('/').pop()}@example.com` })}\n`)
  })
})

/** Each test its own proxy, keyring file and log capture: the tests below run concurrently (most of their time is waiting out the 2 s check). */
async function exportProxy(ringFile: string, onTestFinished: TestContext['onTestFinished']): Promise<TestProxy> {
  const doc: Partial<GatewayConfigInput> & Pick<GatewayConfigInput, 'routes'> = {
    mode: 'ingress',
    tenants: { acme: {} },
    // No request is in flight at close: skip the 1 s grace idle keep-alive connections get.
    shutdown: { drainTimeoutMs: 400 },
    dlp: { keyring: { file: ringFile, create: false }, policy: { enabled: false } },
    routes: [{ name: 'exp', match: { pathPrefix: '/export/' }, upstream: raw.url, type: 'http', filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] }],
  }
  const proxy = await startTestProxy(doc)
  onTestFinished(() => proxy.close())
  return proxy
}

/** One export of one e-mail; returns the value it came back as (a token) and what it stands for. */
async function exportOne(proxy: TestProxy): Promise<{ token: string; value: string }> {
  const name = `user${++seq}`
  const res = await request(`${proxy.url}/export/${name}`, { headers: { 'x-tenant-id': 'acme' } })
  expect(res.statusCode).toBe(200)
  const token = (JSON.parse((await res.body.text()).trim()) as { email: string }).email
  return { token, value: `${name}@example.com` }
}

async function failures(proxy: TestProxy): Promise<number> {
  const res = await request(`${proxy.adminUrl}/metrics`)
  const text = await res.body.text()
  expect(text).toContain(`# TYPE ${METRIC} counter`)
  return metricSum(text, METRIC)
}

const warnings = (proxy: TestProxy) => proxy.logs.lines.filter((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('may read or change the keys'))

afterAll(async () => {
  await raw?.close()
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

/** Exports until `cond` holds (the next one past the 2 s check starts it), each still under the old keyring. */
async function exportUntil(proxy: TestProxy, ring: KeyringSnapshot, cond: () => Promise<boolean>, what: string): Promise<void> {
  await waitUntil(async () => {
    const e = await exportOne(proxy)
    expect(detokenize(e.token, ring).value).toBe(e.value)
    return cond()
  }, CHECK_WAIT_MS, what)
}

describe.concurrent('a keyring that breaks while exports run', () => {
  it('is counted once per failing file, logged once per window (not per 2 s check), and exports keep the old key until a good keyring comes back', async ({ onTestFinished }) => {
    const ringFile = join(ringDir(), 'keyring.json')
    ensureKeyringFile(ringFile)
    const good = await new LocalKeyring(ringFile, { create: false }).load()
    const goodText = readFileSync(ringFile, 'utf8')
    const proxy = await exportProxy(ringFile, onTestFinished)
    const before = await exportOne(proxy)
    expect(detokenize(before.token, good).value).toBe(before.value)
    expect(await failures(proxy)).toBe(0)

    // A non-atomic writer caught half way.
    writeFileSync(ringFile, goodText.slice(0, Math.floor(goodText.length / 2)))
    await exportUntil(proxy, good, async () => (await failures(proxy)) === 1, 'first failure counted')
    await waitUntil(() => proxy.logs.find(FAILED).length === 1, 5_000, 'first failure logged')

    // The file stays broken: every later check retries it, and that is the same failure. (Nothing
    // shows a retry, so the export waits out a whole interval from the last one: one retried check
    // is what a count or line per check would show up on.)
    await sleep(PAST_CHECK_MS)
    const again = await exportOne(proxy)
    expect(detokenize(again.token, good).value).toBe(again.value)
    await sleep(500) // the retried check (a stat and a read, in the background) has landed
    expect(await failures(proxy)).toBe(1)
    expect(proxy.logs.find(FAILED)).toHaveLength(1)

    // Broken differently (valid JSON, not a keyring): a new failure, counted; its line waits out
    // the window (60 s), so there is still one line.
    writeFileSync(ringFile, json({ format: 'something-else' }))
    await exportUntil(proxy, good, async () => (await failures(proxy)) >= 2, 'second failure counted')
    expect(await failures(proxy)).toBe(2)
    await sleep(200)
    expect(proxy.logs.find(FAILED)).toHaveLength(1)
    const line = proxy.logs.find(FAILED)[0]!
    expect(line.level).toBe('error')
    expect(JSON.stringify(line)).toContain(ringFile)
    // No key material in any line.
    const all = proxy.logs.raw.join('\n')
    for (const k of good.keys.values()) expect(all).not.toContain(Buffer.from(k.secret).toString('base64url'))

    // A good keyring again (k2 promoted): picked up, said once; the old key's tokens still reverse.
    const rotated = withKey(good, 'k2')
    writeFileSync(ringFile, serializeKeyring(rotated))
    await waitUntil(async () => (await exportOne(proxy)).token.startsWith('tok_email_k2_'), CHECK_WAIT_MS, 'rotated keyring in use')
    const e = await exportOne(proxy)
    expect(detokenize(e.token, rotated).value).toBe(e.value)
    expect(detokenize(before.token, rotated).value).toBe(before.value)
    await waitUntil(() => proxy.logs.find(RECOVERED).length > 0, 5_000, 'recovery logged')
    await sleep(300)
    expect(proxy.logs.find(RECOVERED)).toHaveLength(1)
    expect(await failures(proxy)).toBe(2)
  }, 40_000)
})

describe.concurrent('a keyring file group or others can read', () => {
  it('mode 0644: loaded and used, with one warning naming the path and mode, not one per reload; a new mode warns again', async ({ onTestFinished }) => {
    const ringFile = join(ringDir(), 'keyring.json')
    ensureKeyringFile(ringFile)
    chmodSync(ringFile, 0o644) // what a Kubernetes Secret volume gives by default
    const good = await new LocalKeyring(ringFile, { create: false }).load()
    const proxy = await exportProxy(ringFile, onTestFinished)
    const e = await exportOne(proxy)
    expect(detokenize(e.token, good).value).toBe(e.value)
    await waitUntil(() => warnings(proxy).length === 1, 5_000, 'warning logged')
    const w = warnings(proxy)[0]!
    expect(w.keyring).toBe(ringFile)
    expect(w.mode).toBe('0644')
    expect(w.msg).toContain(ringFile)
    expect(w.msg).toContain('0644')
    expect(proxy.logs.raw.join('\n')).not.toContain(Buffer.from(good.keys.get('k1')!.secret).toString('base64url'))

    // Reloaded at the same mode (a rotation written in place): no second warning.
    const r2 = withKey(good, 'k2')
    writeFileSync(ringFile, serializeKeyring(r2))
    chmodSync(ringFile, 0o644)
    await waitUntil(async () => (await exportOne(proxy)).token.startsWith('tok_email_k2_'), CHECK_WAIT_MS, 'k2 in use')
    // A second 0644 line (logged with the swap to k2) would still be on its way from the worker
    // thread: the full list below, 2 s later, shows it.
    expect(warnings(proxy)).toHaveLength(1)

    // Another mode is another exposure: one more warning, naming it.
    const r3 = withKey(r2, 'k3')
    writeFileSync(ringFile, serializeKeyring(r3))
    chmodSync(ringFile, 0o604)
    await waitUntil(async () => (await exportOne(proxy)).token.startsWith('tok_email_k3_'), CHECK_WAIT_MS, 'k3 in use')
    await waitUntil(() => warnings(proxy).length >= 2, 5_000, 'second warning logged')
    await sleep(300)
    expect(warnings(proxy).map((l) => l.mode)).toEqual(['0644', '0604'])
  }, 30_000)

  it('mode 0600: no warning, at start or on reload', async ({ onTestFinished }) => {
    const ringFile = join(ringDir(), 'keyring.json')
    ensureKeyringFile(ringFile)
    chmodSync(ringFile, 0o600)
    const good = await new LocalKeyring(ringFile, { create: false }).load()
    const proxy = await exportProxy(ringFile, onTestFinished)
    const e = await exportOne(proxy)
    expect(detokenize(e.token, good).value).toBe(e.value)
    writeFileSync(ringFile, serializeKeyring(withKey(good, 'k2')))
    await waitUntil(async () => (await exportOne(proxy)).token.startsWith('tok_email_k2_'), CHECK_WAIT_MS, 'k2 in use')
    await sleep(300) // log lines travel from the worker thread
    expect(warnings(proxy)).toEqual([])
    expect(proxy.logs.lines.filter((l) => l.level === 'warn' && JSON.stringify(l).includes(ringFile))).toEqual([])
  }, 20_000)

  it('which modes count as exposed: any bit for others, or group write (group read is a pod\'s own fsGroup)', () => {
    expect(exposedMode(0o100600)).toBeUndefined()
    expect(exposedMode(0o100400)).toBeUndefined()
    expect(exposedMode(0o100700)).toBeUndefined()
    expect(exposedMode(0o100440)).toBeUndefined()
    expect(exposedMode(0o100640)).toBeUndefined()
    expect(exposedMode(0o100644)).toBe('0644')
    expect(exposedMode(0o100604)).toBe('0604')
    expect(exposedMode(0o100620)).toBe('0620')
  })
})
