// A config file rewritten in place (`cat > igw.yaml`, an editor that writes over the file) by a
// writer that pauses mid-write: the watch applied, or refused, the half-written file 100 ms after
// the first write. Only a file that stays the same is read.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../config/load.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy } from '../helpers/proxy.ts'

const head = 'listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nworkers: 1\nlog: { level: warn }\nmode: ingress\nroutes:\n'
const route = (upstream: string, name: string) => `  - { name: ${name}, match: { pathPrefix: /${name} }, upstream: "${upstream}", type: http }\n`
const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1])

describe('a config file written in place in two parts', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  // The pause is longer than the old 100 ms debounce and shorter than the settle interval.
  const writeInTwoParts = async (path: string, first: string, rest: string) => {
    writeFileSync(path, first)
    await sleep(150)
    appendFileSync(path, rest)
  }

  for (const [what, cut] of [
    ['a valid prefix (a cut-off routes list) is never applied', (b: string): [string, string] => [head + route(b, 'a'), route(b, 'b') + route(b, 'c')]],
    ['an invalid prefix (cut inside a flow map) is never refused', (b: string): [string, string] => [head + route(b, 'a') + route(b, 'b').slice(0, 30), route(b, 'b').slice(30) + route(b, 'c')]],
  ] as const) {
    it(what, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'igw-settle-'))
      const path = join(dir, 'igw.yaml')
      writeFileSync(path, head + route(backend.url, 'z'))
      const proxy = await startTestProxy(loadConfigFile(path, {}).config as never, { watchPath: path, loadConfig: () => loadConfigFile(path, {}).config })
      try {
        const [first, rest] = cut(backend.url)
        await writeInTwoParts(path, first, rest)
        await expect.poll(() => proxy.config().routes.map((r) => r.name), { timeout: 10_000, interval: 50 }).toEqual(['a', 'b', 'c'])
        // One reload, of the whole file: no version in between ran the truncated one.
        expect(proxy.version()).toBe(2)
        const text = await proxy.metricsText()
        expect(metric(text, 'igw_config_reloads_total')).toBe(1)
        expect(metric(text, 'igw_config_reload_failures_total')).toBe(0)
        expect(metric(text, 'igw_config_last_reload_successful')).toBe(1)
        expect(proxy.logs.find('config reload rejected; keeping the running config')).toEqual([])
      } finally {
        await proxy.close()
        rmSync(dir, { recursive: true, force: true })
      }
    })
  }
})
