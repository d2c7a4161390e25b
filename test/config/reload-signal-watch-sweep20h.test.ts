// A SIGHUP sent for an edit of the watched config file (a config-reloader sidecar, `kill -HUP`
// after saving) and the file watch hearing the same edit are one reload, not two.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const doc = (upstream: string, route: string) =>
  `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nworkers: 1\nlog: { level: warn }\nmode: ingress\nroutes:\n  - { name: ${route}, match: { pathPrefix: /${route} }, upstream: "${upstream}", type: http }\n`

async function status(proxy: TestProxy, path: string): Promise<number> {
  const res = await request(`${proxy.url}${path}`, { reset: true })
  await res.body.dump()
  return res.statusCode
}

async function reloadsTotal(proxy: TestProxy): Promise<number> {
  const m = /^igw_config_reloads_total (\d+)$/m.exec(await proxy.metricsText())
  return Number(m?.[1])
}

describe('SIGHUP and the file watch', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('an edit that is both signalled (SIGHUP) and seen by the watch is applied once: one version per change', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-hup-watch-'))
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, doc(backend.url, 'v1'))
    const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
    try {
      writeFileSync(path, doc(backend.url, 'v2'))
      expect(await proxy.reload()).toMatchObject({ ok: true, version: 2 }) // what SIGHUP runs
      // Room for the watch's event of that write (100 ms debounce) to be handled.
      await sleep(500)
      writeFileSync(path, doc(backend.url, 'v3'))
      await expect.poll(() => status(proxy, '/v3/x'), { timeout: 8_000, interval: 100 }).toBe(200)
      expect(proxy.version()).toBe(3)
      expect(await reloadsTotal(proxy)).toBe(2)
      expect(proxy.logs.find('config applied')).toHaveLength(2)
    } finally {
      await proxy.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
