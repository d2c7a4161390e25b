// A real PostgreSQL (Debian's postgresql package) per test file: initdb into a temp directory,
// postgres on a free loopback port with its unix socket in /tmp, stopped and removed by close().
// PostgreSQL refuses to run as root, and the tests run as root in CI: the server then runs as
// the `postgres` system user (created by the Debian package) through runuser.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { freePort } from './ports.ts'

export interface TestPostgres {
  port: number
  /** postgres://postgres@127.0.0.1:<port>/postgres (trust auth on loopback). */
  url: string
  /** A fresh, empty database on this server; returns its URL. */
  createDatabase(name: string): Promise<string>
  close(): Promise<void>
}

function binDir(): string {
  const base = '/usr/lib/postgresql'
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(join(base, v, 'bin/initdb'))) : []
  versions.sort((a, b) => Number(b) - Number(a))
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it')
  return join(base, versions[0]!, 'bin')
}


/** Commands run as the postgres user when we are root, as ourselves otherwise. */
function asServerUser(cmd: string, args: string[]): [string, string[]] {
  if (userInfo().uid !== 0) return [cmd, args]
  return ['runuser', ['-u', 'postgres', '--', cmd, ...args]]
}

function ownerIds(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error('running as root but there is no "postgres" system user (the Debian postgresql package creates it)')
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) }
}

async function waitUp(port: number, child: ChildProcess, log: () => string, ms = 15_000): Promise<void> {
  const t0 = Date.now()
  for (;;) {
    if (child.exitCode !== null) throw new Error(`postgres exited with ${child.exitCode}:\n${log()}`)
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    // A listening socket is not yet a ready server: pg_isready asks the server itself.
    if (ok && spawnSync(join(binDir(), 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres'], { encoding: 'utf8' }).status === 0) return
    if (Date.now() - t0 > ms) throw new Error(`postgres did not come up on ${port}:\n${log()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export async function startPostgres(): Promise<TestPostgres> {
  const bin = binDir()
  const dir = mkdtempSync(join(tmpdir(), 'igw-pg-'))
  const data = join(dir, 'data')
  const owner = ownerIds()
  if (owner) chownSync(dir, owner.uid, owner.gid)
  const [initCmd, initArgs] = asServerUser(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--no-locale', '--no-sync'])
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8' })
  if (init.status !== 0) throw new Error(`initdb failed:\n${init.stdout}${init.stderr}`)
  const port = await freePort()
  // fsync off: a test database need not survive a power cut, and it makes DDL much faster.
  const [cmd, args] = asServerUser(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=50'])
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  child.stdout!.on('data', (d: Buffer) => out.push(d.toString()))
  child.stderr!.on('data', (d: Buffer) => out.push(d.toString()))
  try {
    await waitUp(port, child, () => out.join(''))
  } catch (err) {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  return {
    port,
    url,
    async createDatabase(name: string) {
      const r = spawnSync(join(bin, 'createdb'), ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', name], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`createdb ${name} failed: ${r.stderr}`)
      return `postgres://postgres@127.0.0.1:${port}/${name}`
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        // pg_ctl's fast shutdown (sessions aborted, clean exit), run as the server's user: a
        // signal to runuser would not reach the postmaster promptly.
        const exited = once(child, 'exit')
        const [stopCmd, stopArgs] = asServerUser(join(bin, 'pg_ctl'), ['stop', '-D', data, '-m', 'fast', '-w', '-t', '10'])
        const r = spawnSync(stopCmd, stopArgs, { encoding: 'utf8' })
        if (r.status !== 0) child.kill('SIGKILL')
        await exited
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
