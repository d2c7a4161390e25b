// README's synopsis of `igw demo` gives its address defaults ([--listen 127.0.0.1:8080]
// [--admin-listen 127.0.0.1:9901]), which are the demo's own (proxy/demo.ts), not the proxy's.
// `igw help demo` said "admin listen address (default :9901)": every interface, for a demo that
// binds loopback only. Sweep 33c: each default the synopsis names is the one the help states.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { IGW_BIN, ROOT } from '../helpers/proxy.ts'

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
const block = /## Command line\n\n```\n([\s\S]*?)```/.exec(readme)?.[1] ?? ''
const demoLine = block.split('\n').find((l) => l.startsWith('igw demo '))!
const help = execFileSync(process.execPath, [IGW_BIN, 'help', 'demo'], { encoding: 'utf8' })
const demoSource = readFileSync(join(ROOT, 'proxy/demo.ts'), 'utf8')

describe('igw demo address defaults (sweep 33c)', () => {
  const defaults = [...demoLine.matchAll(/\[(--(?:admin-)?listen) ([^\]\s]+)\]/g)].map((m) => ({ flag: m[1]!, value: m[2]! }))

  it('the README synopsis names both', () => {
    expect(defaults.map((d) => d.flag)).toEqual(['--listen', '--admin-listen'])
  })

  it.each(['--listen', '--admin-listen'])('%s: the demo uses the default the README names, and its help says so', (flag) => {
    const { value } = defaults.find((d) => d.flag === flag)!
    const key = flag.slice(2)
    expect([`flags['${key}'] ?? '${value}'`, `flags.${key} ?? '${value}'`].some((s) => demoSource.includes(s))).toBe(true)
    const line = help.split('\n').find((l) => l.startsWith(`  ${flag} `))!
    expect(line).toContain(`demo ${value}`)
  })
})
