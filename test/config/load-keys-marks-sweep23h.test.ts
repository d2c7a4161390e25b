// Keys the loaded object cannot hold as written, and text of the document's own that looked like
// the marks ${…} references are parsed under.
import { rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfigFile, parseConfigText, validateConfig } from '../../config/load.ts'
import { problems } from '../helpers/config.ts'
import { writeTempConfig } from '../helpers/proxy.ts'

describe('config keys that are maps, lists or aliases', () => {
  it('a map or list as a key is refused, naming its line and path (it loaded as "[object Object]"-like text)', () => {
    const text = ['routes:', '  - name: a', '    upstream: http://127.0.0.1:9', '  - name: b', '    upstream: http://127.0.0.1:9', '    filters:', '      - name: cache', '        ? {ttlMs: 1}', '        : x', 'tenants:', '  [acme, beta]: {}', ''].join('\n')
    expect(problems(() => parseConfigText(text))).toEqual([
      'line 8: routes[1].filters[0]: a map used as a key; a key is a name',
      'line 11: tenants: a list used as a key; a key is a name',
    ])
  })

  it('an alias of a map as a key is refused; an alias of a scalar that repeats a key is a duplicate', () => {
    expect(problems(() => parseConfigText('base: &b {tier: gold}\ntenants:\n  *b : {}\n'))).toEqual(['line 3: tenants: a map used as a key; a key is a name'])
    // `*t :` is the key "acme": the later `acme:` silently replaced its entry.
    const dup = 'x-names: [&t acme]\ntenants:\n  *t : {tier: gold}\n  acme: {tier: bronze}\n'
    expect(problems(() => parseConfigText(dup))).toEqual(['line 4: key "acme" appears twice in one map (one an alias of the other); each key may appear once'])
    // An alias key that repeats nothing still loads.
    expect(parseConfigText('x-names: [&t acme]\ntenants:\n  *t : {tier: gold}\n  beta: {}\n')).toEqual({ 'x-names': ['acme'], tenants: { acme: { tier: 'gold' }, beta: {} } })
  })
})

describe('"__proto__" as a key', () => {
  it('is refused in maps built by assignment (tenants, a topic\'s variables), where it vanished unchecked; YAML and JSON alike', () => {
    const yaml = 'routes: [{name: r, upstream: "http://127.0.0.1:9"}]\ntenants:\n  __proto__: {tier: gold}\n  acme: {}\n'
    expect(problems(() => validateConfig(parseConfigText(yaml)))).toEqual(['tenants.__proto__: "__proto__" is not allowed as a key'])
    const json = JSON.stringify({
      routes: [{ name: 'r', upstream: 'http://127.0.0.1:9' }],
      subscriptions: { topics: { t: { query: 'subscription { s }', variables: { ok: 1 } } } },
    }).replace('{"ok":1}', '{"ok":1,"__proto__":{"limit":5}}')
    expect(problems(() => validateConfig(JSON.parse(json)))).toEqual(['subscriptions.topics.t.variables.__proto__: "__proto__" is not allowed as a key'])
  })
})

describe('literal text that looks like a reference mark', () => {
  it('"§0§§" and other "§" text of the document is kept as written next to ${…} references', () => {
    const text = 'a: "§0§§"\nb: §1§ ${X}\nc: ${X}§0§§\n"§0§§": ${Y:-d}\n'
    expect(parseConfigText(text, 'c', { X: 'sub' })).toEqual({ a: '§0§§', b: '§1§ sub', c: 'sub§0§§', '§0§§': 'd' })
  })

  it('private-use characters of the document, written or escaped, are kept too', () => {
    const text = 'a: "\\ue0000\\ue000\\ue000"\nb: "\ue0010\ue001\ue001"\nc: ${X}\n'
    expect(parseConfigText(text, 'c', { X: 'sub' })).toEqual({ a: '\ue0000\ue000\ue000', b: '\ue0010\ue001\ue001', c: 'sub' })
  })

  it('a file whose route path prefix holds "§0§§" loads it unchanged', () => {
    const path = writeTempConfig('routes:\n  - name: r\n    upstream: ${U}\n    match: {pathPrefix: /§0§§}\n')
    try {
      const { config } = loadConfigFile(path, { U: 'http://127.0.0.1:9' })
      expect(config.routes[0]!.match.pathPrefix).toBe('/§0§§')
      expect(config.routes[0]!.upstream).toBe('http://127.0.0.1:9')
    } finally {
      rmSync(dirname(path), { recursive: true, force: true })
    }
  })
})
