// `igw help audit verify` / `igw help control-plane` said of --previous-keys "(their audit entries
// verify too)": a replaced key verifies only during its period, up to its successor's first entry
// plus a bounded overlap for rolling restarts (later entries are reported). Sweep 27l: the help says
// so, with the bounds the verifier uses.
import { describe, expect, it } from 'vitest'
import { AUDIT_KEY_OVERLAP_ENTRIES, AUDIT_KEY_OVERLAP_MS } from '../../control-plane/audit.ts'
import { commandUsage } from '../../proxy/cli.ts'

describe('--previous-keys help', () => {
  it.each(['audit verify', 'control-plane'])('igw help %s states the period a replaced key verifies in', (command) => {
    const line = commandUsage(command)?.split('\n').find((l) => l.trimStart().startsWith('--previous-keys'))
    expect(line).toBeDefined()
    expect(line).not.toContain('verify too')
    expect(line).toContain('successor')
    expect(line).toContain(`${AUDIT_KEY_OVERLAP_ENTRIES} entries`)
    expect(line).toContain(`${AUDIT_KEY_OVERLAP_MS / 60_000} minutes`)
  })
})
