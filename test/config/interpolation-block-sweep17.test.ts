// A " #" inside a block scalar or a multi-line quoted value is text, not a YAML comment. The
// ${ENV} pass scanned each line for a comment on its own and took such a "#" for one: the
// ${VAR} after it stayed in the loaded config as the literal text "${VAR}", with no error even
// when VAR was unset (a persisted document, a regex or a message carried it as is). Comments
// proper still need no variable.
import { describe, expect, it } from 'vitest'
import { ConfigError, parseConfigText } from '../../config/load.ts'

const env = { IGW_T17_ORG: 'acme', IGW_T17_ID: '42' }
const load = (text: string): unknown => {
  try {
    return parseConfigText(text, 'igw.yaml', env)
  } catch (err) {
    if (err instanceof ConfigError) return { problems: err.problems }
    throw err
  }
}

describe('interpolation after a "#" that is not a comment', () => {
  it('a block scalar line holding " #" has its references substituted', () => {
    const text = ['query: |', '  query Org { org(id: "${IGW_T17_ORG}") { id } } # ${IGW_T17_ID}', '  # org ${IGW_T17_ORG}', 'n: 1', ''].join('\n')
    expect(load(text)).toEqual({ query: 'query Org { org(id: "acme") { id } } # 42\n# org acme\n', n: 1 })
  })

  it('a multi-line double-quoted value too', () => {
    expect(load('message: "first ${IGW_T17_ORG}\n  then # ${IGW_T17_ID}"')).toEqual({ message: 'first acme then # 42' })
  })

  it('an unset variable there is an error naming it and its line, not a literal "${…}"', () => {
    expect(load('a: |\n  x # ${IGW_T17_UNSET}\n')).toEqual({ problems: ['line 2: environment variable IGW_T17_UNSET is not set and has no default (write ${IGW_T17_UNSET:-value})'] })
    expect(load('a: |\n  # ${PORT-80}\n')).toMatchObject({ problems: [expect.stringContaining('"${PORT-80}" is not a reference igw reads')] })
  })

  it('(guard) comments proper need nothing: whole-line, trailing, and inside a flow collection', () => {
    const text = ['# ${IGW_T17_UNSET} and ${PORT-80}', 'a: ${IGW_T17_ORG} # ${IGW_T17_UNSET}', 'b: [1, # ${IGW_T17_UNSET}', '  2]', 'c: "x # ${IGW_T17_ID}" # ${PORT-1}', ''].join('\n')
    expect(load(text)).toEqual({ a: 'acme', b: [1, 2], c: 'x # 42' })
  })
})
