// README's "Command line" section against what the CLI reads, as `igw help <command>` prints it:
// the synopsis of `igw control-plane` and `igw demo` left out flags they take (--plugin-trust,
// --metrics-listen, --shutdown-grace-ms, --previous-keys; --workers, --redis), and the list of
// environment twins left out IGW_SHUTDOWN_GRACE_MS.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { IGW_BIN, ROOT } from '../helpers/proxy.ts'

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
const help = (...args: string[]) => execFileSync(process.execPath, [IGW_BIN, ...args], { encoding: 'utf8' })

/** `--flag [IGW_TWIN]` pairs from a help text's flag list (--help itself left out). */
function helpFlags(text: string): { flag: string; env?: string }[] {
  return [...text.matchAll(/^ {2}(--[a-z-]+)(?:, -\w)?\s+(?:\[(IGW_[A-Z_]+)\])?/gm)].map((m) => ({ flag: m[1]!, env: m[2] })).filter((f) => f.flag !== '--help' && f.flag !== '--version')
}

/** The README synopsis lines of one command (its line and the indented lines after it). */
function synopsis(command: string): string {
  const block = /## Command line\n\n```\n([\s\S]*?)```/.exec(readme)?.[1] ?? ''
  const lines = block.split('\n')
  const start = lines.findIndex((l) => l.startsWith(`igw ${command} `))
  expect(start, `README synopsis has a line for igw ${command}`).toBeGreaterThanOrEqual(0)
  let end = start + 1
  while (end < lines.length && lines[end]!.startsWith(' ')) end++
  return lines.slice(start, end).join('\n')
}

describe('README command line matches the CLI', () => {
  it.each(['proxy', 'control-plane', 'demo', 'audit verify'])('the synopsis of igw %s names every flag it reads', (command) => {
    const text = synopsis(command)
    const missing = helpFlags(help('help', ...command.split(' '))).filter((f) => !new RegExp(`${f.flag}(?![a-z-])`).test(text))
    expect(missing.map((f) => f.flag)).toEqual([])
  })

  it('lists every environment twin the CLI reads', () => {
    const twins = helpFlags(help('help')).flatMap((f) => (f.env ? [f.env] : []))
    expect(twins.length).toBeGreaterThan(20)
    expect(twins.filter((env) => !readme.includes(`\`${env}\``))).toEqual([])
  })
})
