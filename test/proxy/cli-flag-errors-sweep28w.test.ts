// One mistake in a flag (or its IGW_* twin) is one line that names both, once, whatever the
// number of files checked; and `igw help config validate` says its flags override the file.
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { buildProxyConfig, commandUsage } from '../../proxy/cli.ts'
import { problems } from '../helpers/config.ts'
import { IGW_BIN, writeTempConfig } from '../helpers/proxy.ts'

const sidecar = writeTempConfig('routes: [{ name: a, upstream: "http://127.0.0.1:1" }]\n', 'sidecar.yaml')
const ingress = writeTempConfig('mode: ingress\nroutes: [{ name: a, upstream: "http://127.0.0.1:1" }]\n', 'ingress.yaml')
afterAll(() => {
  rmSync(dirname(sidecar), { recursive: true, force: true })
  rmSync(dirname(ingress), { recursive: true, force: true })
})

const igw = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [IGW_BIN, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, ...env } })

describe('flag error messages', () => {
  it('an address without a port is one problem, not also a bad port', () => {
    expect(problems(() => buildProxyConfig({ upstream: 'http://127.0.0.1:1', listen: 'abc' }, {}))).toEqual(['listen: expected "host:port", ":port" or "[ipv6]:port", got "abc" (set by --listen / IGW_LISTEN)'])
    expect(problems(() => validateConfig({ admin: { listen: 'localhost' }, routes: [{ name: 'a', upstream: 'http://a:1' }] }))).toEqual(['admin.listen: expected "host:port", ":port" or "[ipv6]:port", got "localhost"'])
    // a port out of range is still said
    expect(problems(() => validateConfig({ listen: ':70000', routes: [{ name: 'a', upstream: 'http://a:1' }] }))).toEqual(['listen: expected a port from 0 to 65535, got ":70000"'])
  })

  it('igw demo --listen abc: exit 78 with one problem line', () => {
    const r = igw(['demo', '--listen', 'abc'])
    expect(r.status).toBe(78)
    expect(r.stderr.trim().split('\n').filter((l) => l.startsWith('  '))).toEqual(['  listen: expected "host:port", ":port" or "[ipv6]:port", got "abc" (set by --listen / IGW_LISTEN)'])
  })

  it('a bad IGW_UPSTREAM names the variable, not only a flag never typed', () => {
    expect(problems(() => buildProxyConfig({ upstream: 'nope' }, {}))).toEqual(['expected URL, got "nope" (set by --upstream / IGW_UPSTREAM)'])
    const p = problems(() => buildProxyConfig({ config: ingress, upstream: 'http://127.0.0.1:1' }, {}))
    expect(p).toHaveLength(1)
    expect(p[0]).toMatch(/only applies to sidecar mode \(set by --upstream \/ IGW_UPSTREAM\)$/)
  })

  it('igw config validate a b with a bad IGW_UPSTREAM says it once, exit 78', () => {
    const r = igw(['config', 'validate', sidecar, ingress], { IGW_UPSTREAM: 'nope' })
    expect(r.status).toBe(78)
    expect(r.stderr).toBe('--upstream: invalid config\n  expected URL, got "nope" (set by --upstream / IGW_UPSTREAM)\n')
    expect(r.stdout).toBe('')
  })

  it('igw config validate a b --upstream URL: the ingress file is the one named', () => {
    const r = igw(['config', 'validate', sidecar, ingress, '--upstream', 'http://127.0.0.1:2'])
    expect(r.status).toBe(78)
    expect(r.stdout).toBe(`${sidecar}: valid\n`)
    expect(r.stderr).toBe(`${ingress}: invalid config\n  mode: "ingress", and --upstream only applies to sidecar mode (set by --upstream / IGW_UPSTREAM)\n`)
  })

  it('igw help config validate says its flags override the file', () => {
    expect(commandUsage('config validate')).toMatch(/^flags \(each, or its environment twin, overrides the file's value/m)
    expect(commandUsage('proxy')).toMatch(/^flags:$/m)
  })
})
