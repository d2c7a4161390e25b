// Config loading, sweep 21h.
//  - A YAML tag igw does not know was only a parser warning: the value stayed plain text, so
//    `secret: !ENV JWT_SECRET` (the mkdocs / pyyaml-env-tag way to read a variable) made the
//    secret the words "JWT_SECRET", and `url: !ENV APP_URL` failed as "expected URL" with no word
//    about the tag.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, parseConfigText } from '../../config/load.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const problemsOf = (fn: () => unknown): string[] => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  throw new Error('no ConfigError')
}

describe('YAML tags igw does not read', () => {
  it('are refused with their place, never taken as the plain text after them', () => {
    const text = ['mode: sidecar', 'jwt:', '  secret: !ENV JWT_SECRET', '  url: !env APP_URL', 'other: !custom {a: 1}'].join('\n')
    expect(problemsOf(() => parseConfigText(text, 'igw.yaml', { JWT_SECRET: 's3cret', APP_URL: 'http://x' }))).toEqual([
      'line 3: igw does not read the tag !ENV (the value after it would be taken as it is written); for an environment variable write ${NAME}',
      'line 4: igw does not read the tag !env (the value after it would be taken as it is written); for an environment variable write ${NAME}',
      'line 5: igw does not read the tag !custom (the value after it would be taken as it is written); for an environment variable write ${NAME}',
    ])
  })

  it('the tags it reads still work, and one on a ${VAR} reference (`!ENV ${VAR}`) still reads the variable', () => {
    expect(parseConfigText('a: !!str ${N}\nb: !!int "7"\nc: ${N}\nd: !ENV ${N}\ne: !ENV "${S}"', 'c', { N: '5', S: 's3cret' })).toEqual({ a: '5', b: 7, c: 5, d: 5, e: 's3cret' })
  })

  it('igw config validate exits 78 naming the tag', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'igw-load21h-')), 'igw.yaml')
    writeFileSync(file, 'mode: sidecar\nroutes:\n  - name: r\n    upstream: !ENV APP_URL\n')
    const r = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', file], {
      encoding: 'utf8',
      env: { ...process.env, APP_URL: 'http://127.0.0.1:4000' },
      timeout: 20_000,
    })
    expect(r.status, r.stderr).toBe(78)
    expect(r.stderr).toContain('line 4: igw does not read the tag !ENV')
  }, 30_000)
})
