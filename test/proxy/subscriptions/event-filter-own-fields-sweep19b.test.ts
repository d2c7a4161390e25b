// Topic filters: a path read the event's inherited properties (`constructor`, `toString` of an
// event lacking them are the prototype's functions), so `{"constructor": null}` — "absent or
// null", as the docs define null — never matched an event without that field. And what the
// replay log (Redis) hands back is parsed with numbers beyond 2^53 kept as their digits, as live
// events are, so a filter on a 64-bit id matches replayed events as it matches live ones.
import { describe, expect, it } from 'vitest'
import { parseKeepingDigits } from '../../../config/json-numbers.ts'
import { compileEventFilter } from '../../../proxy/subscriptions/event-filter.ts'

describe('topic event filters', () => {
  it('a field named like an Object.prototype member is absent when the event lacks it', () => {
    const m = compileEventFilter({ constructor: null, 'owner.toString': null }, 'changed')!
    expect(m({ data: { changed: { id: '1', owner: {} } } })).toBe(true)
    expect(m({ data: { changed: { id: '1', constructor: 'x', owner: {} } } })).toBe(false)
  })

  it('replayed text keeps a 64-bit id\'s digits, and the filter matches it, not its rounded neighbour', () => {
    const stored = '{"data":{"changed":{"id":9007199254740993,"n":1}}}'
    // The client's filter value as the hub reads it (digits kept), from the same helper.
    const m = compileEventFilter(parseKeepingDigits('{"id":9007199254740993}'), 'changed')!
    expect(m(parseKeepingDigits(stored) as never)).toBe(true)
    expect(m(parseKeepingDigits('{"data":{"changed":{"id":9007199254740992}}}') as never)).toBe(false)
    // Plain text stays plain (no raw values where none are needed).
    expect(parseKeepingDigits('{"a":1,"b":"x"}')).toEqual({ a: 1, b: 'x' })
  })
})
