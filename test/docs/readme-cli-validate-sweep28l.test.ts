// `igw config validate` reads --upstream, --listen, --admin-listen, --workers, --redis and
// --log-level (applied as `igw proxy` applies them, so a file is checked as the proxy would run
// it, like `envoy --mode validate` with the server's flags), but the README's command-line block
// listed none of them. Sweep 28l: the synopsis names every flag `igw help config validate` lists.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { IGW_BIN, ROOT } from '../helpers/proxy.ts'

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')

describe('README: igw config validate', () => {
  it('its synopsis names every flag the command reads', () => {
    const help = execFileSync(process.execPath, [IGW_BIN, 'help', 'config', 'validate'], { encoding: 'utf8' })
    const flags = [...help.matchAll(/^ {2}(--[a-z-]+)/gm)].map((m) => m[1]!).filter((f) => f !== '--help')
    expect(flags.length).toBeGreaterThan(0)
    const lines = (/## Command line\n\n```\n([\s\S]*?)```/.exec(readme)?.[1] ?? '').split('\n')
    const start = lines.findIndex((l) => l.startsWith('igw config validate '))
    expect(start).toBeGreaterThanOrEqual(0)
    let end = start + 1
    while (end < lines.length && lines[end]!.startsWith(' ')) end++
    const synopsis = lines.slice(start, end).join('\n')
    expect(flags.filter((f) => !new RegExp(`${f}(?![a-z-])`).test(synopsis))).toEqual([])
  })
})
