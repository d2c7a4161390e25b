// Run at image build (deploy/Dockerfile) from the app directory, as the image's uid (Node keeps a
// cache per uid), with NODE_COMPILE_CACHE set: starts `igw proxy` (supervisor and one worker
// thread), loads every filter's modules, starts `igw control-plane`, each on loopback, waits until
// each listens, stops it with SIGTERM. Node writes the stripped TypeScript and V8 code of
// everything they loaded into the cache on exit, and every later process and worker thread of the
// image boots from it (a worker in about half the CPU). Any failure fails the build: an image must
// not ship with a start-up that does not work.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

if (!process.env.NODE_COMPILE_CACHE) throw new Error('warm-compile-cache: set NODE_COMPILE_CACHE to the cache directory')
const igw = join(process.cwd(), 'bin', 'igw.js')
const scratch = mkdtempSync(join(tmpdir(), 'igw-warm-'))

/** Start `igw <args>`, wait for the log line `ready`, SIGTERM it, expect exit 0. */
function warm(args, ready) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [igw, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IGW_STATE_DIR: scratch } })
    let out = ''
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`igw ${args[0]} did not start within 60 s:\n${out}`))
    }, 60_000)
    let stopping = false
    const read = (d) => {
      out += d
      // Once: a second SIGTERM during the drain is an operator's "stop now" (exit 1).
      if (!stopping && out.includes(`"msg":"${ready}"`)) stopping = child.kill('SIGTERM')
    }
    child.stdout.on('data', read)
    child.stderr.on('data', read)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (code === 0 && out.includes(`"msg":"${ready}"`)) resolve()
      else reject(new Error(`igw ${args[0]} ended with ${signal ?? code}:\n${out}`))
    })
  })
}

try {
  await warm(['proxy', '--upstream', 'http://127.0.0.1:9', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1', '--log-level', 'info'], 'igw proxy listening')
  // Filters load when a chain names one (filters/registry.ts), and the proxy above names none:
  // every filter's modules, compiled here, so a config using any of them boots from the cache too.
  await new Promise((resolve, reject) => {
    const code = "const { filterModules } = await import('./filters/registry.ts'); await Promise.all(Object.values(filterModules).map((m) => m.load()))"
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'inherit', 'inherit'] })
    child.on('exit', (c, signal) => (c === 0 ? resolve() : reject(new Error(`loading the filter modules ended with ${signal ?? c}`))))
  })
  await warm(['control-plane', '--listen', '127.0.0.1:0', '--metrics-listen', 'off', '--db', `sqlite:${join(scratch, 'cp.db')}`, '--auth-secret', randomBytes(24).toString('hex'), '--log-level', 'info'], 'igw control plane listening')
} finally {
  rmSync(scratch, { recursive: true, force: true })
}
