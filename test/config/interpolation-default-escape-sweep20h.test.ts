// "$$" is a literal "$" everywhere a reference can be written, defaults included.
import { describe, expect, it } from 'vitest'
import { parseConfigText } from '../../config/load.ts'

describe('$$ inside a ${NAME:-default}', () => {
  it('is one "$" in the value, as it is outside a reference', () => {
    const text = 'a: ${DB_PASS:-pa$$word}\nb: "pa$$word"\nc: ${PRICE:-$$5}\nd: ${P:-a$b}\n'
    expect(parseConfigText(text, 'x.yaml', {})).toEqual({ a: 'pa$word', b: 'pa$word', c: '$5', d: 'a$b' })
  })

  it('a set variable is taken as it is: its "$$" is data, not an escape', () => {
    expect(parseConfigText('a: ${DB_PASS:-x$$y}\n', 'x.yaml', { DB_PASS: 'p$$q' })).toEqual({ a: 'p$$q' })
  })
})
