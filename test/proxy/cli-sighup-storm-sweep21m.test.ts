// `igw proxy --control-plane` has no file to reload, and noted every SIGHUP with a log line: a
// reloader looping on SIGHUP (a watcher on a ConfigMap that keeps changing) flooded the log with
// one line per signal. Sweep 21m: the first line is written, the rest are held back for a minute
// and counted. The real CLI against a real control plane.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectedProxyArgs, connectedProxyEnv, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const IGNORED = 'nothing to reload here'

describe('igw proxy --control-plane under a SIGHUP storm', () => {
  let cp: TestControlPlane
  let p: SpawnedIgw | undefined
  const dir = mkdtempSync(join(tmpdir(), 'igw-hup21m-'))
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await p?.stop('SIGKILL')
    await cp?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('logs the first ignored SIGHUP, not one line per signal', async () => {
    const keyFile = join(dir, 'cp.pub.pem')
    writeFileSync(keyFile, cp.store.key.publicKeyPem)
    await p?.stop('SIGKILL') // a retried attempt: one proxy per id
    const id = `hup-21m-${Date.now()}`
    p = await spawnIgw(connectedProxyArgs({ cpUrl: cp.url, keyFile, stateDir: join(dir, id), id }), await connectedProxyEnv(id))
    const ignored = () => p!.output.filter((l) => l.includes(IGNORED)).length
    // "listening" comes before the signal handlers go on (one caught in between is noted, not
    // logged): signalled until the first line shows
    await expect
      .poll(
        () => {
          if (ignored() === 0) p!.child.kill('SIGHUP')
          return ignored()
        },
        { timeout: 4_000, interval: 50 },
      )
      .toBe(1)
    // spaced so each is delivered on its own (pending signals of one kind merge)
    for (let i = 0; i < 10; i++) {
      p.child.kill('SIGHUP')
      await new Promise((r) => setTimeout(r, 25))
    }
    // SIGTERM after them: once its line is out, every SIGHUP before it was handled
    p.child.kill('SIGTERM')
    await expect.poll(() => p!.output.some((l) => l.includes('"shutting down"')), { timeout: 3_000, interval: 20 }).toBe(true)
    expect(await p.exited).toBe(0)
    expect(ignored()).toBe(1) // was 11
  })
})
