import { describe, expect, it } from 'vitest'
import { compileEventFilter, EventFilterError } from '../../../proxy/subscriptions/event-filter.ts'

const ev = (e: unknown) => ({ data: { entityChanged: e } })

describe('topic event filters', () => {
  it('matches every key (equality, any-of lists, nested paths; IDs compare as strings)', () => {
    const m = compileEventFilter({ id: 7, 'owner.region': ['eu', 'us'] }, 'entityChanged')!
    expect(m(ev({ id: '7', owner: { region: 'eu' } }))).toBe(true)
    expect(m(ev({ id: '7', owner: { region: 'apac' } }))).toBe(false)
    expect(m(ev({ id: '8', owner: { region: 'eu' } }))).toBe(false)
    expect(m(ev({ id: '7' }))).toBe(false)
    expect(m({ data: null })).toBe(false)
    expect(m({ errors: [{}] })).toBe(false)
  })

  it('null matches null or absent, never an object', () => {
    const m = compileEventFilter({ deletedAt: null }, 'e')!
    expect(m({ data: { e: { deletedAt: null } } })).toBe(true)
    expect(m({ data: { e: {} } })).toBe(true)
    expect(m({ data: { e: { deletedAt: '2026' } } })).toBe(false)
    expect(compileEventFilter({ a: 'x' }, 'e')!({ data: { e: { a: { toString: () => 'x' } } } })).toBe(false)
  })

  it('no filter or an empty one means every event', () => {
    expect(compileEventFilter(undefined, 'e')).toBeUndefined()
    expect(compileEventFilter({}, 'e')).toBeUndefined()
  })

  it('refuses shapes it cannot evaluate', () => {
    for (const bad of ['x', [1], { a: {} }, { a: [] }, { a: [{}] }, { '': 1 }, { 'a..b': 1 }, Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 1]))]) {
      expect(() => compileEventFilter(bad, 'e')).toThrow(EventFilterError)
    }
  })
})
