// The key/default tables of README.md ("### Core") and docs/persisted-and-cache.md against the
// zod schema: every key a table names exists, every backticked default is the schema's, and every
// key the schema takes is named by some row. README's table left out
// upstreams.<name>.keepAliveTimeoutMs (the idle time to keep below the backend's own), the
// health check's enabled/intervalMs/timeoutMs, websocket.enabled and tenants.<id>.displayName.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { filterConfigs } from '../../config/filters/index.ts'
import { byteSize } from '../../config/primitives.ts'
import { gatewayConfigObject } from '../../config/schema.ts'
import { ROOT } from '../helpers/proxy.ts'

type Schema = { _zod: { def: Record<string, any> } }

function unwrap(s: Schema): Schema {
  for (;;) {
    const d = s._zod.def
    if (['optional', 'default', 'prefault', 'nullable', 'readonly'].includes(d.type)) s = d.innerType
    else if (d.type === 'pipe') s = d.in
    else return s
  }
}

/** Every leaf key path: records as `<>`, arrays of objects as `[]`. */
function leaves(s: Schema, path: string, out: string[] = []): string[] {
  const d = unwrap(s)._zod.def
  if (d.type === 'object') for (const [k, v] of Object.entries(d.shape)) leaves(v as Schema, path ? `${path}.${k}` : k, out)
  else if (d.type === 'record') leaves(d.valueType, `${path}.<>`, out)
  else if (d.type === 'array' && unwrap(d.element)._zod.def.type === 'object') leaves(d.element, `${path}[]`, out)
  else out.push(path)
  return out
}

/** The schema's default at a documented path (`<name>`/`<id>` → the entry made for it). */
function defaultAt(parsed: unknown, path: string): unknown {
  let cur: any = parsed
  for (const seg of path.replace(/<[a-z]+>/g, 'x').replace(/\[\]/g, '.0').split('.')) cur = cur?.[seg]
  return cur
}

/** A documented default as the schema holds it: byte sizes as numbers, lists of filters by name. */
function render(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((i) => (typeof i === 'object' && i !== null ? (i as { name: string }).name : String(i))).join(', ')}]`
  if (typeof v === 'object' && v !== null) return JSON.stringify(v)
  return String(v)
}
function same(documented: string, actual: unknown): boolean {
  if (/^\d+(\.\d+)?[kmg]i?b$/i.test(documented)) return byteSize.parse(documented) === actual
  return documented === render(actual)
}

interface Row { keys: string[]; defaults: string[] }

/** Rows of the key/default/meaning table after `heading`; `a.b` / `c` names a.b and a.c. */
function table(file: string, heading: string): Row[] {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const at = text.indexOf(heading)
  expect(at, `${file} has ${heading}`).toBeGreaterThanOrEqual(0)
  const lines = text.slice(at).split('\n')
  const start = lines.findIndex((l) => l.startsWith('| key | default |'))
  const rows: Row[] = []
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break
    const [keyCell, defaultCell] = line.slice(2).split(' | ')
    const named = [...keyCell!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!)
    const parent = named[0]!.includes('.') ? named[0]!.slice(0, named[0]!.lastIndexOf('.') + 1) : ''
    rows.push({ keys: named.map((k, i) => (i === 0 || k.includes('.') ? k : parent + k)), defaults: defaultCell!.split(' / ').map((d) => d.trim()) })
  }
  return rows
}

const filterSchema = (name: string) => filterConfigs.find((f) => unwrap(f as Schema)._zod.def.shape.name._zod.def.values?.[0] === name)! as unknown as Schema

const cases = [
  {
    name: 'README.md ### Core',
    rows: () => table('README.md', '### Core'),
    keys: leaves(gatewayConfigObject as unknown as Schema, '').filter((k) => !/^(subscriptions|persistedDocuments|quotas|dlp)\./.test(k)),
    parsed: gatewayConfigObject.parse({ redis: { url: 'redis://127.0.0.1:1' }, upstreams: { x: { url: 'http://127.0.0.1:1' } }, routes: [{ name: 'r', upstream: 'x' }], tenants: { x: {} } }),
  },
  ...(['persisted', 'cache'] as const).map((f) => ({
    name: `docs/persisted-and-cache.md ${f}`,
    rows: () => table('docs/persisted-and-cache.md', `## \`${f}\` filter`),
    keys: leaves(filterSchema(f), '').filter((k) => k !== 'name' && k !== 'failMode'),
    parsed: (unwrap(filterSchema(f)) as unknown as { parse(v: unknown): unknown }).parse({ name: f }),
  })),
]

describe.each(cases)('$name', ({ rows, keys, parsed }) => {
  it('names only keys the schema takes', () => {
    const documented = rows().flatMap((r) => r.keys).map((k) => k.replace(/<[a-z]+>/g, '<>'))
    expect(documented.length).toBeGreaterThan(10)
    const known = new Set(keys)
    // A row may name a whole object or record (`tenants.<>`, `safelist.tenants`).
    expect(documented.filter((k) => !known.has(k) && !keys.some((s) => s.startsWith(`${k}.`) || s.startsWith(`${k}[]`)))).toEqual([])
  })

  it('names every key the schema takes', () => {
    const documented = rows().flatMap((r) => r.keys).map((k) => k.replace(/<[a-z]+>/g, '<>'))
    expect(keys.filter((k) => !documented.some((d) => k === d || k.startsWith(`${d}.`) || k.startsWith(`${d}[]`)))).toEqual([])
  })

  it('states the schema defaults', () => {
    const wrong: string[] = []
    let checked = 0
    for (const row of rows()) {
      row.defaults.forEach((d, i) => {
        const literal = /^`([^`]+)`$/.exec(d)?.[1]
        const key = row.keys[i]
        if (literal === undefined || key === undefined) return
        checked++
        const actual = defaultAt(parsed, key)
        if (!same(literal, actual)) wrong.push(`${key}: documented ${literal}, schema ${render(actual)}`)
      })
    }
    expect(checked).toBeGreaterThan(10)
    expect(wrong).toEqual([])
  })
})
