// Values the schema took and the runtime could not honour. A duration over setTimeout's 2^31−1 ms
// fires after 1 ms: `shutdown.drainTimeoutMs: 3000000000` ("as long as it takes") cut a request
// in flight at once (the supervisor's deadline runs 2 s past it, so a drain is held to a day). A `hostRewrite` that is no host[:port] (a URL where the host was meant) was
// sent to the backend as its Host. Both are config errors naming the path now.
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'
import { startRawBackend } from '../helpers/backends.ts'
import { IGW_BIN, startTestProxy, writeTempConfig } from '../helpers/proxy.ts'

const upstream = 'http://127.0.0.1:1'

const problemsOf = (doc: Record<string, unknown>): string[] => problems(() => validateConfig(doc))

describe('durations longer than a timer holds', () => {
  it('shutdown.drainTimeoutMs is refused over a day, naming the path and the bound', () => {
    expect(problemsOf({ shutdown: { drainTimeoutMs: 3_000_000_000 }, routes: [{ name: 'r', upstream }] })).toEqual(['shutdown.drainTimeoutMs: expected at most 86400000 milliseconds (24 hours), got 3000000000'])
  })

  it.each([
    ['listener.keepAliveTimeoutMs', { listener: { keepAliveTimeoutMs: 2 ** 31 }, routes: [{ name: 'r', upstream }] }],
    ['routes[0].timeouts.totalMs', { routes: [{ name: 'r', upstream, timeouts: { totalMs: 1e12 } }] }],
    ['upstreams.u.healthCheck.intervalMs', { upstreams: { u: { url: upstream, healthCheck: { intervalMs: 5e9 } } }, routes: [{ name: 'r', upstream: 'u' }] }],
  ])('%s is refused, naming the path and the bound', (path, doc) => {
    expect(problemsOf(doc)).toEqual([expect.stringMatching(new RegExp(`^${path.replace(/[.[\]]/g, '\\$&')}: expected at most 2147483647 milliseconds`))])
  })

  it('the longest timer, a day of drain and a long replay age (not a timer) are accepted', () => {
    const cfg = validateConfig({ shutdown: { drainTimeoutMs: 86_400_000, delayMs: 2 ** 31 - 1 }, subscriptions: { replay: { maxAgeMs: 30 * 86_400_000 } }, routes: [{ name: 'r', upstream }] })
    expect(cfg.shutdown).toEqual({ drainTimeoutMs: 86_400_000, delayMs: 2 ** 31 - 1, idleGraceMs: 1_000 })
    expect(cfg.subscriptions.replay.maxAgeMs).toBe(30 * 86_400_000)
  })

  it('a drain of a day lets a request in flight finish', async () => {
    let answer: (() => void) | undefined
    const backend = await startRawBackend((_req, res) => {
      answer = () => res.end('done')
    })
    const proxy = await startTestProxy({ shutdown: { drainTimeoutMs: 86_400_000 }, routes: [{ name: 'r', upstream: backend.url, type: 'http' }] })
    try {
      const inFlight = request(`${proxy.url}/slow`).then(async (r) => [r.statusCode, await r.body.text()] as const)
      await expect.poll(() => answer !== undefined, { timeout: 10_000 }).toBe(true)
      const closed = proxy.close()
      // still draining, the request not cut
      await new Promise((r) => setTimeout(r, 50))
      answer!()
      expect(await inFlight).toEqual([200, 'done'])
      await closed
    } finally {
      await backend.close()
    }
  })
})

describe('routes[].hostRewrite', () => {
  it.each(['https://api.example.com', 'api.example.com/v1', 'a b', ':8443', 'api.example.com:', 'api.example.com:99999', 'fe80::1'])('%j is refused, naming the path', (hostRewrite) => {
    expect(problemsOf({ routes: [{ name: 'r', upstream, hostRewrite }] })).toEqual([expect.stringMatching(/^routes\[0\]\.hostRewrite: expected a host\[:port\] for the Host header/)])
  })

  it.each(['api.example.com', 'API.Example.com:8443', 'my_service', '10.0.0.7:80', '[::1]:8080'])('%j is accepted', (hostRewrite) => {
    expect(validateConfig({ routes: [{ name: 'r', upstream, hostRewrite }] }).routes[0]!.hostRewrite).toBe(hostRewrite)
  })
})

// `igw proxy --listen :8080 --admin-listen :8080` started, and the second listener's EADDRINUSE
// exited 69 with "another process listens there": the process was igw itself.
describe('listen and admin.listen on one port', () => {
  it.each([
    [':8080', ':8080'],
    [':8080', '127.0.0.1:8080'],
    ['0.0.0.0:9000', '[::1]:9000'],
    ['127.0.0.1:8080', '127.0.0.1:8080'],
  ])('%s and %s are refused, naming admin.listen', (listen, adminListen) => {
    expect(problemsOf({ listen, admin: { listen: adminListen }, routes: [{ name: 'r', upstream }] })).toEqual([`admin.listen: takes the port of listen (${listen}): give the admin port another one, got ${JSON.stringify(adminListen)}`])
  })

  it.each([
    ['127.0.0.1:0', '127.0.0.1:0'],
    ['127.0.0.1:8080', '127.0.0.2:8080'],
    [':8080', ':9901'],
  ])('%s and %s are accepted', (listen, adminListen) => {
    expect(validateConfig({ listen, admin: { listen: adminListen }, routes: [{ name: 'r', upstream }] }).admin.listen).toBe(adminListen)
  })

  it('igw config validate exits 78 naming the path and the flag', () => {
    const file = writeTempConfig({ routes: [{ name: 'r', upstream }] })
    const r = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', file, '--listen', ':18085', '--admin-listen', '127.0.0.1:18085'], { encoding: 'utf8', timeout: 30_000 })
    expect(r.status).toBe(78)
    expect(r.stderr).toContain('admin.listen: takes the port of listen (:18085): give the admin port another one, got "127.0.0.1:18085" (set by --admin-listen / IGW_ADMIN_LISTEN)')
  })
})
