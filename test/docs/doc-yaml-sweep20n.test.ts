// A YAML block in README.md or docs/*.md that holds a whole document (a top-level `routes:`) must
// load as written: docs/dlp.md's and docs/quota.md's routed to an upstream `app` they never
// defined, and docs/dlp.md's named a tenant under dlp.tenants that was not under tenants:.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { ROOT } from '../helpers/proxy.ts'

const blocks = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))].flatMap((file) =>
  [...readFileSync(join(ROOT, file), 'utf8').matchAll(/```ya?ml\n([\s\S]*?)```/g)].filter((m) => /^routes:/m.test(m[1]!)).map((m, i) => [`${file} #${i + 1}`, m[1]!] as const),
)

describe('whole-document YAML examples in the docs', () => {
  it('there are some', () => expect(blocks.length).toBeGreaterThanOrEqual(3))
  it.each(blocks)('%s validates', (name, text) => {
    expect(() => validateConfig(parseConfigText(text, name, {}), name)).not.toThrow()
  })
})
