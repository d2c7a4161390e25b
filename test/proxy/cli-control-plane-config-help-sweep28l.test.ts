// `igw help control-plane` described --config with the proxy's words, "config file (YAML or JSON)":
// the control plane only seeds an empty store with it (control-plane/store.ts init), so an operator
// who edited the file and restarted saw no change and no word why. Sweep 28l: the help says so.
import { describe, expect, it } from 'vitest'
import { commandUsage } from '../../proxy/cli.ts'

const flagLine = (command: string, flag: string) => commandUsage(command)?.split('\n').find((l) => l.trimStart().startsWith(`${flag},`) || l.trimStart().startsWith(`${flag} `))

describe('--config help per command', () => {
  it('igw help control-plane: a seed, committed only when the store is empty', () => {
    const line = flagLine('control-plane', '--config')
    expect(line).toBeDefined()
    expect(line).toMatch(/seed/)
    expect(line).toMatch(/only when the store is empty/)
  })

  it('igw help proxy keeps the config file wording', () => {
    expect(flagLine('proxy', '--config')).toMatch(/config file \(YAML or JSON\)/)
  })
})
