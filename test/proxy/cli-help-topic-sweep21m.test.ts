// `igw help <topic>` / `igw <command> --help` for a command that does not exist printed the whole
// usage and exited 0, as if that help existed (a typo in a script or a docs link went unnoticed).
// Sweep 21m: a usage error — stderr, exit 2, as `igw nosuch` itself is. Run against bin/igw.js.
import { execFile } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { IGW_BIN } from '../helpers/proxy.ts'

function igw(args: string[]): Promise<{ args: string; code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [IGW_BIN, ...args], { encoding: 'utf8', timeout: 10_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      resolve({ args: args.join(' '), code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
    })
  })
}

describe('igw help for no such command', () => {
  it('is a usage error: exit 2, said on stderr; help that exists still prints, exit 0', async () => {
    const [bad, good] = await Promise.all([
      Promise.all([
        ['help', 'nosuch'],
        ['nosuch', '--help'],
        ['config', 'valdate', '--help'],
      ].map(igw)),
      // a word with several commands under it (the whole list), and one command's flags
      Promise.all([['help', 'config'], ['help', 'audit']].map(igw)),
    ])
    for (const r of bad) {
      expect(r.code, r.args).toBe(2)
      expect(r.stdout, r.args).toBe('')
      expect(r.stderr, r.args).toContain(`igw: no help for "${r.args.replace(/^help | --help$/g, '')}": no such command`)
    }
    for (const r of good) {
      expect(r.code, r.args).toBe(0)
      expect(r.stderr, r.args).toBe('')
      expect(r.stdout, r.args).toMatch(/^igw /)
    }
  }, 20_000) // a Node start each, on a loaded CI machine
})
