// An empty config file is said to be empty (not "routes: required"), and top-level `x-` keys
// (docker-compose's extension fields, a home for YAML anchors) are ignored — at start and on reload.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { buildProxyConfig, parseFlags } from '../../proxy/cli.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy } from '../helpers/proxy.ts'

const problems = (fn: () => unknown): string[] => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  throw new Error('no ConfigError')
}
const EMPTY = '(root): the file is empty (no settings, only blank lines or comments)'

describe('an empty config file', () => {
  it('is said to be empty, naming the file, whether it holds nothing, blanks and comments, or a "---"', () => {
    for (const text of ['', '\n  \n', '# igw config\n# (to be filled)\n', '---\n', '\uFEFF']) expect(problems(() => parseConfigText(text, 'igw.yaml'))).toEqual([EMPTY])
    const dir = mkdtempSync(join(tmpdir(), 'igw-empty-'))
    try {
      const path = join(dir, 'igw.yaml')
      writeFileSync(path, '')
      expect(() => buildProxyConfig(parseFlags(['--config', path], {}).flags, {})).toThrow(`${path}: invalid config\n  ${EMPTY}`)
      expect(() => loadConfigFile(path, {})).toThrow(`${path}: invalid config\n  ${EMPTY}`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a document that is not empty is read as before ({}, null and "" are documents)', () => {
    expect(parseConfigText('{}', 'igw.yaml')).toEqual({})
    expect(parseConfigText('~', 'igw.yaml')).toEqual({})
    expect(parseConfigText('""', 'igw.yaml')).toBe('')
  })
})

describe('top-level x- keys', () => {
  const text = (upstream: string) =>
    [
      'x-route: &route { type: http, upstream: "' + upstream + '" }',
      'x-notes: [owner platform-team]',
      'listen: 127.0.0.1:0',
      'admin: { listen: 127.0.0.1:0 }',
      'workers: 1',
      'log: { level: warn }',
      'mode: ingress',
      'routes:',
      '  - { <<: *route, name: a, match: { pathPrefix: /a } }',
      '',
    ].join('\n')

  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('hold anchors and are ignored; other unknown keys, and x- keys below the root, are still refused', () => {
    const config = validateConfig(parseConfigText(text(backend.url), 'igw.yaml'), 'igw.yaml')
    expect(config.routes.map((r) => [r.name, r.upstream])).toEqual([['a', backend.url]])
    expect(Object.keys(config).filter((k) => k.startsWith('x-'))).toEqual([])
    expect(problems(() => validateConfig(parseConfigText(text(backend.url).replace('x-notes', 'y-notes'), 'igw.yaml'), 'igw.yaml'))).toEqual(['(root): unknown key "y-notes"'])
    expect(problems(() => validateConfig(parseConfigText(text(backend.url).replace('log: {', 'log: { x-note: 1,'), 'igw.yaml'), 'igw.yaml'))).toEqual(['log: unknown key "x-note"'])
  })

  it('load at start and on reload; an empty file on reload is refused as empty', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-x-'))
    const path = join(dir, 'igw.yaml')
    writeFileSync(path, text(backend.url))
    const flags = parseFlags(['--config', path], {}).flags
    const proxy = await startTestProxy(buildProxyConfig(flags, {}) as never, { loadConfig: () => buildProxyConfig(flags, {}) })
    try {
      writeFileSync(path, text(backend.url).replace('name: a, match: { pathPrefix: /a }', 'name: b, match: { pathPrefix: /b }'))
      expect(await proxy.reload()).toMatchObject({ ok: true, version: 2 })
      expect(proxy.config().routes.map((r) => r.name)).toEqual(['b'])
      writeFileSync(path, '')
      const refused = await proxy.reload()
      expect(refused.ok).toBe(false)
      expect(refused.error).toBe(`${path}: invalid config\n  ${EMPTY}`)
    } finally {
      await proxy.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
