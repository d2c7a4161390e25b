// The control plane's /metrics: what a real push cycle (a proxy's SSE stream, ACK, NACK, a
// committed change) and API traffic leave in it, and `igw control-plane` from the real CLI
// serving it on --metrics-listen, with its flag errors (exit 78).
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { metricSample, startTestControlPlane, TEST_AUTH_SECRET, type TestControlPlane } from '../helpers/control-plane.ts'
import { makePublisher, signedPackage, writeTrustFile } from '../helpers/plugins.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const scratch = mkdtempSync(join(tmpdir(), 'igw-cp-metrics-'))
afterAll(() => rmSync(scratch, { recursive: true, force: true }))

async function eventually<T>(fn: () => Promise<T | undefined>, ms = 5_000): Promise<T> {
  const until = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > until) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** A proxy's config stream, read event by event. */
async function openStream(cp: TestControlPlane, proxy: string) {
  const abort = new AbortController()
  const res = await fetch(`${cp.url}/v1/stream?proxy=${proxy}&version=0`, { headers: { authorization: `Bearer ${await cp.token({ sub: proxy, roles: ['proxy'] })}` }, signal: abort.signal })
  expect(res.status).toBe(200)
  const reader = res.body!.getReader()
  let buf = ''
  return {
    async next(event: string): Promise<string> {
      for (;;) {
        const i = buf.indexOf('\n\n')
        if (i !== -1) {
          const block = buf.slice(0, i)
          buf = buf.slice(i + 2)
          if (block.includes(`event: ${event}`)) return block
          continue
        }
        const { value, done } = await reader.read()
        if (done) throw new Error('stream ended')
        buf += Buffer.from(value).toString()
      }
    },
    close: () => abort.abort(),
  }
}

describe('control plane metrics', () => {
  let cp: TestControlPlane
  const scrape = async () => (await fetch(`${cp.metricsUrl}/metrics`)).text()
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  it('count a push cycle: stream connected, snapshots pushed, ACK and NACK, a committed version and its audit entry', async () => {
    let text = await scrape()
    expect(metricSample(text, 'igw_control_plane_proxies_connected')).toBe(0)
    expect(metricSample(text, 'igw_control_plane_config_head_version')).toBe(1) // the seed
    expect(metricSample(text, 'igw_control_plane_snapshot_pushes_total')).toBe(0)
    expect(metricSample(text, 'igw_control_plane_acks_total', { result: 'ack' })).toBe(0)
    expect(metricSample(text, 'igw_control_plane_acks_total', { result: 'nack' })).toBe(0)

    const stream = await openStream(cp, 'edge-1')
    await stream.next('snapshot') // version 1 at once: the proxy runs none
    text = await scrape()
    expect(metricSample(text, 'igw_control_plane_proxies_connected')).toBe(1)
    expect(metricSample(text, 'igw_control_plane_snapshot_pushes_total')).toBe(1)
    const proxyToken = await cp.token({ sub: 'edge-1', roles: ['proxy'] })
    const ack = (version: number, status: 'ACK' | 'NACK', proxy = 'edge-1') => cp.api(`/v1/proxies/${proxy}/ack`, { method: 'POST', body: JSON.stringify({ version, status, ...(status === 'NACK' ? { error: 'test refusal' } : {}) }), token: proxyToken })
    expect((await ack(1, 'ACK')).status).toBe(204)

    const put = await cp.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })
    expect(put.status).toBe(201)
    expect(await stream.next('snapshot')).toMatch(/^id: 2$/m)
    expect((await ack(2, 'NACK')).status).toBe(204)
    // An ACK from a proxy that never connected is refused and not counted.
    expect((await ack(2, 'ACK', 'ghost')).status).toBe(404)

    text = await scrape()
    expect(metricSample(text, 'igw_control_plane_config_head_version')).toBe(2)
    expect(metricSample(text, 'igw_control_plane_config_commits_total')).toBe(1)
    expect(metricSample(text, 'igw_control_plane_audit_appends_total', { action: 'tenants.put' })).toBe(1)
    expect(metricSample(text, 'igw_control_plane_snapshot_pushes_total')).toBe(2)
    expect(metricSample(text, 'igw_control_plane_acks_total', { result: 'ack' })).toBe(1)
    expect(metricSample(text, 'igw_control_plane_acks_total', { result: 'nack' })).toBe(1)

    stream.close()
    text = await eventually(async () => {
      const t = await scrape()
      return metricSample(t, 'igw_control_plane_proxies_connected') === 0 && metricSample(t, 'igw_control_plane_requests_total', { route: '/v1/stream', method: 'GET', status: '200' }) === 1 ? t : undefined
    })
    // A stream's lifetime is not a request latency: counted, never observed.
    expect(text).not.toMatch(/igw_control_plane_request_duration_seconds_count\{[^}]*route="\/v1\/stream"/)
  })

  it('count API requests by route template, method and status, with a latency histogram; unknown paths share one label', async () => {
    const before = await scrape()
    const r = await cp.api('/v1/tenants/acme')
    expect(r.status).toBe(200)
    expect((await cp.api('/v1/tenants/nobody')).status).toBe(404)
    expect((await cp.api('/v1/tenants/acme', { token: '' })).status).toBe(401)
    for (let i = 0; i < 3; i++) expect((await cp.api(`/v1/no-such-thing-${i}`)).status).toBe(404)
    expect((await cp.api('/healthz', { method: 'DELETE' })).status).toBe(405)
    // A response is counted when it is handed to the socket, which may be a moment after this
    // client has read it: wait for the last one.
    const text = await eventually(async () => {
      const t = await scrape()
      return (metricSample(t, 'igw_control_plane_requests_total', { route: '/healthz', method: 'DELETE', status: '405' }) ?? 0) > 0 ? t : undefined
    })
    const delta = (labels: Record<string, string>) => (metricSample(text, 'igw_control_plane_requests_total', labels) ?? 0) - (metricSample(before, 'igw_control_plane_requests_total', labels) ?? 0)
    expect(delta({ route: '/v1/tenants/{id}', method: 'GET', status: '200' })).toBe(1)
    expect(delta({ route: '/v1/tenants/{id}', method: 'GET', status: '404' })).toBe(1)
    expect(delta({ route: '/v1/tenants/{id}', method: 'GET', status: '401' })).toBe(1)
    expect(delta({ route: 'unmatched', method: 'GET', status: '404' })).toBe(3)
    expect(delta({ route: '/healthz', method: 'DELETE', status: '405' })).toBe(1)
    expect(text).not.toContain('no-such-thing')
    expect(metricSample(text, 'igw_control_plane_request_duration_seconds_count', { route: '/v1/tenants/{id}', method: 'GET' })).toBeGreaterThanOrEqual(3)
    expect(metricSample(text, 'igw_control_plane_request_duration_seconds_bucket', { route: '/v1/tenants/{id}', method: 'GET', le: '+Inf' })).toBeGreaterThanOrEqual(3)
  })
})

describe('igw control-plane (the CLI)', () => {
  const acme = makePublisher('acme')
  const trust = writeTrustFile(join(scratch, 'trust.json'), [acme])
  const base = (dir: string) => ['control-plane', '--db', `sqlite:${join(dir, 'igw.db')}`, '--listen', '127.0.0.1:0', '--auth-secret', TEST_AUTH_SECRET]

  it('serves /metrics on --metrics-listen and takes publisher keys from IGW_PLUGIN_TRUST', async () => {
    const dir = mkdtempSync(join(scratch, 'cli-'))
    const child = spawn(process.execPath, [IGW_BIN, ...base(dir), '--metrics-listen', '127.0.0.1:0'], { env: { ...process.env, IGW_PLUGIN_TRUST: trust }, stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit')
    try {
      let out = ''
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
      const listening = await new Promise<{ listen: string; metrics: string; pluginPublishers: number }>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString()
          const line = out.split('\n').find((l) => l.includes('igw control plane listening'))
          if (line) resolve(JSON.parse(line) as { listen: string; metrics: string; pluginPublishers: number })
        })
        void exited.then(() => reject(new Error(`control plane exited:\n${out}`)))
      })
      expect(listening.pluginPublishers).toBe(1)
      const api = `http://${listening.listen}`
      const metrics = `http://${listening.metrics}/metrics`
      const { mintToken } = await import('../../control-plane/auth.ts')
      const token = await mintToken(TEST_AUTH_SECRET, { sub: 'cli-test', roles: ['admin'] })
      const up = await fetch(`${api}/v1/plugins`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(signedPackage(acme, { name: 'hello', version: '0.1.0', artifact: Buffer.from('hello') })) })
      expect(up.status).toBe(201)
      const text = await (await fetch(metrics)).text()
      expect(metricSample(text, 'igw_plugin_uploads_total', { publisher: 'acme' })).toBe(1)
      expect(metricSample(text, 'igw_plugin_upload_rejections_total', { reason: 'unsigned' })).toBe(0)
    } finally {
      child.kill('SIGTERM')
      await exited
    }
  })

  it('a metrics address that is taken stops the start (exit 78, --metrics-listen named)', async () => {
    const { createServer } = await import('node:net')
    const busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    try {
      const taken = `127.0.0.1:${(busy.address() as { port: number }).port}`
      const dir = mkdtempSync(join(scratch, 'cli-'))
      const child = spawn(process.execPath, [IGW_BIN, ...base(dir), '--metrics-listen', taken], { stdio: ['ignore', 'pipe', 'pipe'] })
      let err = ''
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
      const [code] = (await once(child, 'exit')) as [number | null]
      expect(code, err).toBe(69) // EX_UNAVAILABLE, as for the proxy's addresses (README)
      expect(err).toContain(`--metrics-listen ${taken} is taken`)
    } finally {
      busy.close()
    }
  })

  it.each<[string, string[], Record<string, string>, RegExp]>([
    ['a trust file that is not there', ['--plugin-trust', '/nonexistent/trust.json'], {}, /--plugin-trust: invalid config\n {2}cannot read \/nonexistent\/trust\.json/],
    ['a trust file holding a private key', [], { IGW_PLUGIN_TRUST: 'PRIVATE' }, /keys\[0\]\.d: a private key does not belong in the trust file/],
    ['a bad metrics address', ['--metrics-listen', 'nine-nine-oh-two'], {}, /--metrics-listen: invalid config\n {2}expected host:port, :port or off, got "nine-nine-oh-two"/],
  ])('refuses %s (exit 78, the problem named)', (_what, args, env, message) => {
    const dir = mkdtempSync(join(scratch, 'cli-'))
    const withKey = { ...env }
    if (env.IGW_PLUGIN_TRUST === 'PRIVATE') {
      const f = join(dir, 'trust.json')
      writeFileSync(f, JSON.stringify({ keys: [{ ...acme.jwk, ...acme.privateKey.export({ format: 'jwk' }) }] }))
      withKey.IGW_PLUGIN_TRUST = f
    }
    const r = spawnSync(process.execPath, [IGW_BIN, ...base(dir), '--metrics-listen', '127.0.0.1:0', ...args], { env: { ...process.env, ...withKey }, encoding: 'utf8', timeout: 20_000 })
    expect(r.status, r.stdout + r.stderr).toBe(78)
    expect(r.stderr).toMatch(message)
  })
})
