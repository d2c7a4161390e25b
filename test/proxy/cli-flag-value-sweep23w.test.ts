// `igw proxy --workers -2` printed Node's parseArgs text ("Option '--workers' argument is
// ambiguous … use '--workers=-XYZ'") and exited 2, where `--workers=-2` and `--workers 0` are
// reported as the flag's bad value (exit 78). A negative number after a flag is now its value; a
// flag left without one says what it takes. Real `igw` processes.
import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { parseFlags } from '../../proxy/cli.ts'
import { IGW_BIN } from '../helpers/proxy.ts'

const igw = (...args: string[]) => {
  const r = spawnSync(process.execPath, [IGW_BIN, ...args], { encoding: 'utf8', timeout: 15_000, env: { ...process.env, IGW_WORKERS: '', IGW_LISTEN: '', IGW_LOG_LEVEL: '' } })
  return { code: r.status, stderr: r.stderr }
}

describe('a flag value that starts with a dash, or a flag without a value', () => {
  it('--workers -2 is the value -2: refused as --workers=-2 and --workers 0 are (exit 78)', () => {
    const spaced = igw('proxy', '--upstream', 'http://127.0.0.1:1', '--workers', '-2')
    expect(spaced.stderr).not.toMatch(/ambiguous|-XYZ/)
    expect(spaced.stderr).toMatch(/^ {2}workers: .*got -2 \(set by --workers \/ IGW_WORKERS\)$/m)
    expect(spaced.code).toBe(78)
    expect(parseFlags(['proxy', '--workers', '-2', '--listen', '-1']).flags).toMatchObject({ workers: '-2', listen: '-1' })
  })

  it('a flag with no value, or a flag after it, says what the flag takes (usage error, exit 2)', () => {
    const last = igw('proxy', '--upstream', 'http://127.0.0.1:1', '--workers')
    expect(last.stderr.split('\n')[0]).toBe('igw: --workers needs a value: worker threads, a number or "auto" (default: available cores)')
    expect(last.code).toBe(2)
    expect(() => parseFlags(['proxy', '--log-level', '-x', '--upstream', 'http://127.0.0.1:1'])).toThrow(/^--log-level needs a value: fatal\|error\|warn\|info\|debug\|trace\|silent, got the flag -x \(if that is the value, write --log-level=-x\)$/)
    expect(() => parseFlags(['proxy', '-c', '--workers', '2'])).toThrow(/^--config needs a value: config file \(YAML or JSON\), got the flag --workers$/)
  })
})
