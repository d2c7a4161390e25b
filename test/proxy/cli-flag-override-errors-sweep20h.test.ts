// A bad value that came from a flag (or its IGW_* twin) layered over a config document is reported
// as the flag's, not as the document's: the file, or the control plane version NACKed, was fine.
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { buildProxyConfig, configFromDocument } from '../../proxy/cli.ts'
import { problems } from '../helpers/config.ts'
import { IGW_BIN, writeTempConfig } from '../helpers/proxy.ts'

const file = writeTempConfig('workers: 4\nroutes: [{ name: a, upstream: "http://127.0.0.1:1" }]\n')
afterAll(() => rmSync(dirname(file), { recursive: true, force: true }))

describe('flag overrides in config errors', () => {
  it('--workers 0 / negative / non-numeric over a file that says workers: 4 names the flag', () => {
    expect(problems(() => buildProxyConfig({ config: file, workers: '0' }, {}))).toEqual(['workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0 (set by --workers / IGW_WORKERS)'])
    expect(problems(() => buildProxyConfig({ config: file, workers: '-2' }, {}))[0]).toMatch(/^workers: .*got -2 \(set by --workers \/ IGW_WORKERS\)$/)
    expect(problems(() => buildProxyConfig({ config: file, workers: 'many' }, {}))[0]).toMatch(/^workers: .*got "many" \(set by --workers \/ IGW_WORKERS\)$/)
  })

  it('each overriding flag is named at its own path; a problem of the document itself is left as it is', () => {
    const p = problems(() => buildProxyConfig({ config: file, listen: '99999', 'admin-listen': '70000', redis: 'http://r', 'log-level': 'loud' }, {}))
    expect(p.map((l) => `${l.slice(0, l.indexOf(':'))} ${/\(set by [^)]*\)$/.exec(l)?.[0]}`).sort()).toEqual([
      'admin.listen (set by --admin-listen / IGW_ADMIN_LISTEN)',
      'listen (set by --listen / IGW_LISTEN)',
      'log.level (set by --log-level / IGW_LOG_LEVEL)',
      'redis.url (set by --redis / IGW_REDIS)',
    ])
    expect(problems(() => configFromDocument({ workers: 0, routes: [{ name: 'a', upstream: 'http://x:1' }] }, { listen: ':1' }, 'control plane version 7'))).toEqual(['workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0'])
  })

  it('flags alone (--upstream, no document) name the flag too', () => {
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', workers: '0' }, {}))).toEqual(['workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0 (set by --workers / IGW_WORKERS)'])
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', listen: '99999' }, {}))[0]).toMatch(/^listen: .* \(set by --listen \/ IGW_LISTEN\)$/)
  })

  it('a control plane version that is fine but meets a bad --workers on this proxy: the NACK text names the flag', () => {
    const p = problems(() => configFromDocument({ routes: [{ name: 'a', upstream: 'http://x:1' }] }, { workers: '0' }, 'control plane version 7'))
    expect(p).toEqual(['workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0 (set by --workers / IGW_WORKERS)'])
  })

  it('igw config validate with IGW_WORKERS=0 exits 78 naming the variable, not only the file', () => {
    const r = spawnSync(process.execPath, [IGW_BIN, 'config', 'validate', file], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, IGW_WORKERS: '0' } })
    expect(r.status).toBe(78)
    expect(r.stderr).toMatch(/: invalid config\n  workers: expected "auto" or a whole number of worker threads from 1 to 256, got 0 \(set by --workers \/ IGW_WORKERS\)\n/)
  })
})
