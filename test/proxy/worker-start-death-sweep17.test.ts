// A worker thread that dies before it listens without saying why (no 'fatal' message): its heap
// limit reached while it loads, an uncaught exception, terminated. The supervisor only counted a
// start failure it was told about: the first start waited forever (the CLI printed the worker's
// error and hung, admin port bound, never exiting), and a restarted thread that died while
// starting was never restarted again (one worker less for the life of the process, /readyz 503).
// Real `igw proxy` processes and the in-process supervisor, real backend, real HTTP clients.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { IGW_BIN, metricSum, startTestProxy } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

describe('a worker thread that dies before it listens', () => {
  let echo: RawBackend
  beforeAll(async () => {
    echo = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await echo?.close()
  })

  it('at the first start (heap limit while loading): `igw proxy` exits with the reason instead of hanging', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-start-death-'))
    const file = join(dir, 'igw.yaml')
    // 16 MB (the smallest allowed) is less than a worker needs to load: it dies of its heap limit.
    writeFileSync(file, stringify({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, workerHeap: { maxOldGenerationMb: 16 }, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] }))
    const child = spawn(process.execPath, [IGW_BIN, 'proxy', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d: Buffer) => (output += d.toString()))
    child.stderr.on('data', (d: Buffer) => (output += d.toString()))
    const exited = once(child, 'exit').then(([code]) => code as number | null)
    // It hung for good before: bounded here, and never left running.
    const timer = setTimeout(() => child.kill('SIGKILL'), 40_000)
    try {
      const code = await exited
      expect(output).toMatch(/worker 0 exited with code 1 before listening: .*memory limit.*ERR_WORKER_OUT_OF_MEMORY/)
      expect(code).toBe(1)
      expect(output).not.toMatch(/igw proxy listening/)
    } finally {
      clearTimeout(timer)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  }, 60_000)

  it('after a crash: a replacement that dies while starting is restarted again, not left out for good', async () => {
    const proxy = await startTestProxy({ workers: 1, routes: [{ name: 'a', upstream: echo.url, type: 'http' }] })
    try {
      const first = proxy.threads()[0]!
      await first.terminate() // a crash
      // The replacement, caught before it listens (loading takes a while), dies too.
      let second: (typeof first) | undefined
      await waitUntil(() => {
        const t = proxy.threads()[0]
        if (t !== undefined && t !== first) second = t
        return second !== undefined
      }, 20_000, 'replacement spawned')
      await second!.terminate()
      await waitUntil(async () => {
        const t = proxy.threads()[0]
        return t !== undefined && t !== first && t !== second && metricSum(await proxy.metricsText(), 'igw_workers') === 1
      }, 30_000, 'a third thread listening')
      const res = await fetch(`${proxy.url}/x`)
      expect(res.status).toBe(200)
      await res.text()
      expect(metricSum(await proxy.metricsText(), 'igw_worker_restarts_total')).toBe(2)
    } finally {
      await proxy.close()
    }
  }, 60_000)
})
