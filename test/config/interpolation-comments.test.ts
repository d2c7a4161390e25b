// References in YAML comments are left alone, whole-line or after a value: a config that
// documents another tool's `${PORT-8080}` (or an unset `${VAR}`) in a trailing comment loads; the
// same forms inside a quoted value are still errors (a `#` in quotes is not a comment).
import { describe, expect, it } from 'vitest'
import { ConfigError, parseConfigText } from '../../config/load.ts'

const load = (text: string): unknown => {
  try {
    return parseConfigText(text, 'igw.yaml')
  } catch (err) {
    if (err instanceof ConfigError) return { problems: err.problems }
    throw err
  }
}

describe('interpolation and comments', () => {
  it('trailing comments are comments', () => {
    expect(load('listen: ":8080"   # or ${PORT-8080} in compose files')).toEqual({ listen: ':8080' })
    expect(load('listen: ":8080"\t# set ${IGW_TEST_UNSET_VAR} here')).toEqual({ listen: ':8080' })
    expect(load('a: ${IGW_TEST_UNSET_Q:-d} # and ${PORT-1}')).toEqual({ a: 'd' })
  })
  it('a # inside quotes or without a space before it is not a comment', () => {
    expect(load('a: "x #${PORT-80}"')).toMatchObject({ problems: [expect.stringContaining('"${PORT-80}" is not a reference igw reads')] })
    expect(load("a: 'it''s #${PORT-80}'")).toMatchObject({ problems: [expect.stringContaining('"${PORT-80}" is not a reference igw reads')] })
    expect(load('a: x#${IGW_TEST_UNSET_Q:-d}')).toEqual({ a: 'x#d' })
  })
})
