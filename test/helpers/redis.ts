// A real redis-server (Debian package) per test file, on a free loopback port, with its own
// data directory. stop()/start() simulate an outage; data survives a restart when persistent.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { freePort } from './ports.ts'

export interface TestRedis {
  port: number
  url: string
  /** Kill the server (SIGKILL: no goodbye, like a crash or a partition). */
  stop(): Promise<void>
  /** Start it again on the same port (and data directory). */
  start(): Promise<void>
  /** Freeze it (SIGSTOP): connections stay open and nothing answers, like a hung server. */
  pause(): void
  /** Let a paused server run again (SIGCONT). */
  resume(): void
  close(): Promise<void>
}


async function waitUp(port: number, ms = 5_000): Promise<void> {
  const t0 = Date.now()
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.write('PING\r\n')
        s.once('data', (d) => {
          s.destroy()
          resolve(d.toString().startsWith('+PONG'))
        })
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() - t0 > ms) throw new Error(`redis-server did not come up on ${port}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

export async function startRedis(opts: { persistent?: boolean } = {}): Promise<TestRedis> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'igw-redis-'))
  let child: ChildProcess | undefined
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', opts.persistent ? 'yes' : 'no', '--daemonize', 'no', '--loglevel', 'warning']
  const start = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' })
    child.once('error', (err) => {
      throw new Error(`cannot run redis-server (apt-get install redis-server): ${err.message}`)
    })
    await waitUp(port)
  }
  const stop = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const c = child
    c.kill('SIGKILL')
    await once(c, 'exit')
  }
  await start()
  const pause = () => void child?.kill('SIGSTOP')
  const resume = () => void child?.kill('SIGCONT')
  return { port, url: `redis://127.0.0.1:${port}`, stop, start, pause, resume, close: stop }
}

/**
 * Registers other proxies as live in the quota store under `prefix` (heartbeats an hour ahead, so
 * they never expire in a test): this proxy's local-share during an outage is 1 / (peers + 1).
 */
export async function registerLivePeers(url: string, prefix: string, ...peers: string[]): Promise<void> {
  const admin = new Redis(url)
  try {
    await admin.zadd(`${prefix}q:proxies`, ...peers.flatMap((id) => [Date.now() + 3_600_000, id]))
  } finally {
    admin.disconnect()
  }
}
