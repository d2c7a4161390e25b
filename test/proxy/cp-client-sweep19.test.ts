// The proxy's control-plane client, sweep 19. Real control plane (SQLite), real `igw proxy`
// processes, a real node:http server, a real tmpfs for the disk-full case.
//  - A proxy that refused the control plane's head at boot (invalid here, failing to start here,
//    signed by another key) and booted from its last-known-good left
//    igw_config_reload_failures_total at 0: IgwConfigReloadRejected never fired for it.
//  - A --control-plane URL that answers 200 with something other than an event stream (another
//    server: a web page, a login page in front) was read as a stream that gave nothing and
//    ended: boot waited its whole timeout to say "unreachable", and the running proxy blamed
//    "another proxy with the same proxy id".
//  - last-good.json written on a full disk left its partial temp file behind (part of the
//    document's secrets, and the space that ran out).
//  - The scheme mismatches said nothing an operator can act on: https:// to the (plain HTTP)
//    control plane logged OpenSSL's "…SSL routines:tls_validate_record_header:wrong version
//    number:../deps/openssl/…", http:// to a TLS one "other side closed".
//  - A --state-dir that cannot be created (a path through a file, a read-only root file system),
//    or where the proxy id cannot be written, crashed `igw proxy` with a stack (exit 1) instead
//    of naming the flag (exit 78).
//  - SIGTERM with a control plane that does not answer: the drain waited for the closing usage
//    report to time out (5 s; 10 s behind a dead network path), the proxy taking requests meanwhile.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { generateKeyPairSync } from 'node:crypto'
import { createServer as createHttpsServer } from 'node:https'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient } from '../../proxy/control-plane-client.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { connectedProxyEnv, metricSample, ProxyFleet, runningVersion } from '../helpers/control-plane.ts'
import { IGW_BIN, type SpawnedIgw } from '../helpers/proxy.ts'
import { canMountTmpfs, fillUntilFull, releaseMounts, tinyMount } from '../helpers/tmpfs.ts'
import { waitUntil } from '../helpers/wait.ts'

const fleet = new ProxyFleet('cp19')
beforeAll(async () => {
  await fleet.start()
})
afterAll(async () => {
  await fleet.close()
  releaseMounts()
})

const reloadFailures = async (p: SpawnedIgw): Promise<number | undefined> => metricSample(await (await request(`${p.adminUrl}/metrics`)).body.text(), 'igw_config_reload_failures_total')

describe('control-plane client sweep 19', () => {
  it('a head refused at boot (it cannot start here) is counted in igw_config_reload_failures_total once the proxy serves its last-known-good', async () => {
    const state = join(fleet.work, 'state-metric')
    const p1 = await fleet.proxy('m-1', state)
    await waitUntil(async () => (await fleet.row('m-1'))?.appliedVersion !== null && (await fleet.row('m-1'))?.appliedVersion !== undefined, 15_000, 'the boot ACK')
    const good = await runningVersion(p1)
    await p1.stop()
    // Schema-valid (the control plane takes it), but the key file it names is not on this host.
    const r = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({ jwt: { publicKeyFile: '/nonexistent/igw-cp19-key.pem' } }) })
    expect(r.status).toBeLessThan(300)
    const bad = ((await r.json()) as { version: number }).version
    const p2 = await fleet.proxy('m-1', state)
    try {
      expect(p2.output.join('\n')).toMatch(/control plane head failed to start here; NACKed/)
      expect(await runningVersion(p2)).toBe(good)
      await waitUntil(async () => (await fleet.row('m-1'))?.lastNack?.version === bad, 15_000, 'the boot NACK')
      // The alert's metric: it refused a document and keeps running the previous one (0 before).
      // At least 1: the refused version is tried again after 2 s (a key file may appear),
      // and a busy machine can reach that try before this read; each try that fails counts.
      expect(await reloadFailures(p2)).toBeGreaterThanOrEqual(1)
    } finally {
      await p2.stop()
      // Put the route back for the tests that follow.
      await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({}) })
    }
  })

  describe('a --control-plane URL answering 200 with no event stream', () => {
    let web: RawBackend
    beforeAll(async () => {
      web = await startRawBackend((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
        res.end('<html><body>Sign in</body></html>')
      })
    })
    afterAll(() => web.close())

    it('boot says it is not an event stream at once (no waiting out the boot timeout), and later attempts do not blame a twin proxy', async () => {
      const { publicKey } = generateKeyPairSync('ed25519')
      const logs: string[] = []
      const c = new ControlPlaneClient({
        url: web.url,
        token: 't',
        stateDir: mkdtempSync(join(tmpdir(), 'igw-cp19-web-')),
        proxyId: 'web-1',
        publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        toConfig: (doc) => doc as never,
        usageIntervalMs: 3_600_000,
        bootTimeoutMs: 20_000,
        log: (_l, o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
      })
      try {
        const t0 = performance.now()
        const boot = await c.bootstrap()
        const ms = performance.now() - t0
        expect(boot).toBeUndefined() // no last-known-good here
        expect(ms).toBeLessThan(12_000) // was the whole 20 s boot timeout
        expect(logs.join('\n')).toMatch(/answered 200 with content-type text\/html.*not an event stream: is --control-plane the control plane's URL\?/)
        // Attempts go on (backing off); none is taken for a stream that another proxy ended.
        await waitUntil(() => web.requests.length >= 3, 15_000, 'further attempts')
        expect(logs.join('\n')).not.toMatch(/same proxy id|ended the config stream/)
      } finally {
        await c.close()
      }
    })
  })

  describe('a --control-plane URL with the wrong scheme', () => {
    const bootLog = async (url: string): Promise<string> => {
      const { publicKey } = generateKeyPairSync('ed25519')
      const logs: string[] = []
      const c = new ControlPlaneClient({
        url,
        token: 't',
        stateDir: mkdtempSync(join(tmpdir(), 'igw-cp19-tls-')),
        proxyId: 'tls-1',
        publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        toConfig: (doc) => doc as never,
        usageIntervalMs: 3_600_000,
        bootTimeoutMs: 20_000,
        log: (_l, o, m) => logs.push(`${m} ${JSON.stringify(o)}`),
      })
      try {
        expect(await c.bootstrap()).toBeUndefined()
      } finally {
        await c.close()
      }
      return logs.join('\n')
    }

    it('https:// to the plain-HTTP control plane says so, not OpenSSL internals', async () => {
      const out = await bootLog(fleet.cpUrl.replace('http://', 'https://'))
      expect(out).toMatch(/control plane unreachable/)
      expect(out).toMatch(/does not answer with TLS \(it looks like plain HTTP: use an http:\/\/ URL for --control-plane/)
      expect(out).not.toMatch(/deps\/openssl|tls_validate_record_header/)
    })

    const openssl = spawnSync('openssl', ['version']).status === 0
    it.skipIf(!openssl)('http:// to a TLS control plane suggests https://; an untrusted certificate names NODE_EXTRA_CA_CERTS', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'igw-cp19-cert-'))
      const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { encoding: 'utf8' })
      expect(r.status, r.stderr).toBe(0)
      const tls = createHttpsServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) }, (_q, res) => res.end('x'))
      await new Promise<void>((done) => tls.listen(0, '127.0.0.1', done))
      try {
        const port = (tls.address() as AddressInfo).port
        const plain = await bootLog(`http://127.0.0.1:${port}`)
        expect(plain).toMatch(/closed the connection without answering \(if the control plane serves TLS, use an https:\/\/ URL for --control-plane\)/)
        const untrusted = await bootLog(`https://localhost:${port}`)
        expect(untrusted).toMatch(/the TLS certificate of https:\/\/localhost:\d+ is not accepted: .*NODE_EXTRA_CA_CERTS/)
      } finally {
        tls.closeAllConnections()
        await new Promise<void>((done) => tls.close(() => done()))
        rmSync(dir, { recursive: true, force: true })
      }
    })
  })

  describe('a --state-dir the proxy cannot use', () => {
    /** `igw proxy …` to its exit (bounded): code and output. */
    const runIgw = async (args: string[]): Promise<{ status: number | null; out: string }> => {
      const child = spawn(process.execPath, [IGW_BIN, ...args], { env: { ...process.env, ...(await connectedProxyEnv('proxy-sd')) }, stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.stderr.on('data', (d: Buffer) => (out += d.toString()))
      const kill = setTimeout(() => child.kill('SIGKILL'), 60_000)
      const [status] = (await once(child, 'exit')) as [number | null]
      clearTimeout(kill)
      return { status, out }
    }
    const base = () => ['proxy', '--control-plane', fleet.cpUrl, '--control-plane-key', fleet.keyFile, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1']

    it('one that cannot be created stops the start with exit 78 naming the flag, not a stack', async () => {
      const file = join(fleet.work, 'a-file')
      writeFileSync(file, 'not a directory')
      const r = await runIgw([...base(), '--proxy-id', 'sd-1', '--state-dir', join(file, 'state')])
      expect(r.status, r.out).toBe(78)
      expect(r.out).toMatch(/--state-dir/)
      expect(r.out).toMatch(/give it a writable directory/)
      expect(r.out).not.toMatch(/at new ControlPlaneClient/)
    })

    it.skipIf(!canMountTmpfs)('a read-only one where the proxy id must be written: exit 78 naming the flag', async () => {
      const mount = tinyMount('64k')!
      mkdirSync(join(mount, 'state'))
      expect(spawnSync('mount', ['-o', 'remount,ro', mount]).status).toBe(0)
      const r = await runIgw([...base(), '--state-dir', join(mount, 'state')])
      expect(r.status, r.out).toBe(78)
      expect(r.out).toMatch(/--state-dir/)
      expect(r.out).not.toMatch(/at ControlPlaneClient|at new ControlPlaneClient/)
    })

    it.skipIf(!canMountTmpfs)('a read-only one with --proxy-id given (nothing to write at start): exit 78 all the same', async () => {
      const mount = tinyMount('64k')!
      mkdirSync(join(mount, 'state'))
      expect(spawnSync('mount', ['-o', 'remount,ro', mount]).status).toBe(0)
      const r = await runIgw([...base(), '--proxy-id', 'sd-ro', '--state-dir', join(mount, 'state')])
      expect(r.status, r.out).toBe(78)
      expect(r.out).toMatch(/--state-dir/)
      expect(r.out).toMatch(/give it a writable directory/)
    })
  })

  it.skipIf(!canMountTmpfs)('last-good.json that cannot be written on a full disk leaves no partial temp file; once there is room it is written whole, mode 0600', async () => {
    const mount = tinyMount('256k')!
    const state = join(mount, 'state')
    mkdirSync(state)
    const filler = join(mount, 'filler')
    fillUntilFull(filler)
    const p = await fleet.proxy('full-1', state)
    try {
      await waitUntil(() => p.output.join('\n').includes('could not write the last-known-good snapshot'), 15_000, 'the failed write')
      // The proxy still runs and ACKed (sweep 15); the disk holds no half document.
      expect(readdirSync(state).filter((f) => f.endsWith('.tmp'))).toEqual([])
      expect(existsSync(join(state, 'last-good.json'))).toBe(false)
      rmSync(filler)
      const v = await fleet.commitTenant('cp19-full')
      await waitUntil(async () => (await runningVersion(p)) === v, 15_000, 'the push after space was freed')
      await waitUntil(() => existsSync(join(state, 'last-good.json')), 15_000, 'last-good.json')
      const held = JSON.parse(JSON.parse(readFileSync(join(state, 'last-good.json'), 'utf8')).payload as string) as { version: number }
      expect(held.version).toBe(v)
      expect(statSync(join(state, 'last-good.json')).mode & 0o777).toBe(0o600)
      expect(readdirSync(state).filter((f) => f.endsWith('.tmp'))).toEqual([])
    } finally {
      await p.stop()
    }
  })

  // Last: it takes the control plane away.
  it('SIGTERM while the closing usage report hangs on a control plane that does not answer: the drain starts without waiting it out', async () => {
    const p = await fleet.proxy('stop-1', join(fleet.work, 'state-stop'))
    try {
      await waitUntil(async () => typeof (await fleet.row('stop-1'))?.appliedVersion === 'number', 15_000, 'the boot ACK')
      // Counted traffic: close() has a usage report to send (the interval is a minute here).
      for (let i = 0; i < 3; i++) {
        const r = await request(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: JSON.stringify({ query: '{ hello(name: "cp19") }' }) })
        expect(r.statusCode).toBe(200)
        await r.body.dump()
      }
      // The control plane's address now takes connections and never answers (a frozen process).
      const port = Number(new URL(fleet.cpUrl).port)
      await fleet.stopCp()
      const socks: Socket[] = []
      let seen = ''
      const frozen = createServer((s) => {
        socks.push(s)
        s.on('data', (d: Buffer) => (seen += d.toString('latin1')))
      })
      await new Promise<void>((r) => frozen.listen(port, '127.0.0.1', r))
      try {
        p.child.kill('SIGTERM')
        // Up to the drain's start is what is checked; the exit after it still waits out the hung
        // report (5 s), so the process is killed once the drain began. A drain that waits for the
        // report still logs it late, and the bound below fails.
        await waitUntil(() => p.output.some((l) => l.includes('"msg":"draining"')), 20_000, 'the drain')
        await waitUntil(() => seen.includes('POST /v1/usage'), 10_000, 'the closing usage report') // it was in flight
        await p.stop('SIGKILL')
        const lines = p.output.flatMap((l) => l.split('\n')).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string; time?: string | number })
        const at = (msg: string) => lines.findIndex((l) => l.msg === msg)
        const stopping = at('shutting down')
        const draining = at('draining')
        expect(stopping).toBeGreaterThanOrEqual(0)
        expect(draining).toBeGreaterThan(stopping)
        // The hung report gives up after 5 s (headers timeout): the drain began before that.
        const gaveUp = lines.findIndex((l) => typeof l.msg === 'string' && l.msg.startsWith('usage report not delivered'))
        if (gaveUp !== -1) expect(draining).toBeLessThan(gaveUp)
        const ms = (l: { time?: string | number }) => (typeof l.time === 'number' ? l.time : Date.parse(String(l.time)))
        expect(ms(lines[draining]!) - ms(lines[stopping]!)).toBeLessThan(4_500)
      } finally {
        for (const s of socks) s.destroy()
        await new Promise<void>((r) => frozen.close(() => r()))
      }
    } finally {
      await p.stop()
    }
  })
})
