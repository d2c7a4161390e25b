// An operation whose payload cannot be serialized, sent on an upstream connection that is up:
// graphql-ws asks shouldRetry about the thrown error, and a "yes" re-sends on the same socket at
// once, throws again, forever, in microtasks — the thread never reaches its timers or sockets
// again. It runs in a child process so that, if it spins, the test can still kill it and fail.
import { execFile } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { ROOT } from '../../helpers/proxy.ts'

const SCRIPT = `
const { UpstreamPool } = await import('./proxy/subscriptions/upstream.ts')
const { HubMetrics } = await import('./proxy/subscriptions/metrics.ts')
const { Registry } = await import('prom-client')
const { pino } = await import('pino')
const pool = new UpstreamPool(new HubMetrics(new Registry()), pino({ level: 'silent' }))
const conn = pool.get('k', process.argv[1], {}, undefined, { retryInitialMs: 50, retryMaxMs: 100, connectTimeoutMs: 2000, keepAliveMs: 0 })
let ticks = 0
const live = await new Promise((resolve, reject) => {
  conn.subscribe({ query: 'subscription { countdown(from: 1000, intervalMs: 20) }' }, { next: () => { ticks++; resolve(true) }, error: reject, complete: () => {} })
})
const outcome = await new Promise((resolve) => {
  conn.subscribe({ query: '{ hello }', variables: { a: 1n } }, {
    next: () => resolve('next'),
    error: (e) => resolve('error: ' + (e instanceof Error ? e.constructor.name : String(e))),
    complete: () => resolve('complete'),
  })
})
const before = ticks
await new Promise((r) => setTimeout(r, 200))
console.log(JSON.stringify({ live, outcome, stillDelivering: ticks > before }))
process.exit(0)
`

describe('upstream connection: errors that are not about the connection', () => {
  let demo: DemoBackend
  beforeAll(async () => {
    demo = await startDemoBackend()
  })
  afterAll(async () => {
    await demo?.close()
  })

  it('are not retried: the operation fails, the connection and its other streams carry on', async () => {
    const wsUrl = `${demo.url.replace(/^http/, 'ws')}/graphql`
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string; killed: boolean }>((resolve) => {
      const child = execFile(process.execPath, ['--input-type=module', '-e', SCRIPT, wsUrl], { cwd: ROOT, timeout: 8_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        resolve({ code: child.exitCode, stdout, stderr, killed: err?.killed === true || child.signalCode === 'SIGKILL' })
      })
    })
    expect(out.killed, `the operation spun instead of failing\n${out.stderr}`).toBe(false)
    expect(JSON.parse(out.stdout.trim())).toEqual({ live: true, outcome: 'error: TypeError', stillDelivering: true })
  })
})
