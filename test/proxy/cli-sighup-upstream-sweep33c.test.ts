// README: "SIGHUP reloads the file …; without a file to reload it is logged and ignored". With
// `igw proxy --upstream URL` (no --config) the signal went to a reload that answered "no config
// file to reload" to nobody: no log line, the operator saw nothing happen. Sweep 33c. The real CLI.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const IGNORED = 'nothing to reload here'

describe('igw proxy --upstream (no config file) on SIGHUP', () => {
  let backend: DemoBackend
  let p: SpawnedIgw | undefined
  beforeAll(async () => {
    backend = await startDemoBackend({ host: '127.0.0.1', port: 0 })
  })
  afterAll(async () => {
    await p?.stop('SIGKILL')
    await backend?.close()
  })

  it('logs that there is nothing to reload, and keeps serving', async () => {
    await p?.stop('SIGKILL') // a retried attempt
    p = await spawnIgw(['proxy', '--upstream', backend.url, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'])
    const ignored = () => p!.output.filter((l) => l.includes(IGNORED)).length
    // "listening" comes before the signal handlers go on (one caught in between is only noted):
    // signalled until the line shows
    await expect
      .poll(
        () => {
          if (ignored() === 0) p!.child.kill('SIGHUP')
          return ignored()
        },
        { timeout: 8_000, interval: 100 },
      )
      .toBe(1)
    const res = await fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
    expect(res.status).toBe(200)
    p.child.kill('SIGTERM')
    expect(await p.exited).toBe(0)
  })
})
