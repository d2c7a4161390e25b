// The published config/schema.json against a real JSON Schema validator (ajv, draft 2020-12, with
// ajv-formats as `ajv-cli -c ajv-formats` loads it). Sweep 27l: (1) validateConfig ignores top-level
// `x-` keys (docker-compose style anchor blocks) but the schema's strict root refused them, so
// editors flagged `x-defaults:`; (2) zod wrote its string checks as `"format": "starts_with"`, a
// format no validator knows, and ajv in its default strict mode refused to compile the schema.
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseConfigText, validateConfig } from '../../config/load.ts'
import { ROOT } from '../helpers/proxy.ts'

// ajv-formats' CommonJS default export is the function itself under NodeNext resolution
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => void
const schema = JSON.parse(readFileSync(join(ROOT, 'config/schema.json'), 'utf8')) as object
function compile(strict: boolean): ValidateFunction {
  const ajv = new Ajv2020({ strict, allErrors: true, logger: false })
  addFormats(ajv)
  return ajv.compile(schema)
}

const withAnchors = `
x-defaults: &upstream
  connections: 16
x-note: anything at all
upstreams:
  a:
    <<: *upstream
    url: http://127.0.0.1:4000
routes:
  - name: graphql
    upstream: a
`

describe('config/schema.json with ajv', () => {
  it('compiles in strict mode: every format it names is a JSON Schema format', () => {
    expect(() => compile(true)).not.toThrow()
  })

  it('accepts top-level x- keys, as validateConfig does, and still refuses other unknown keys', () => {
    const validate = compile(false)
    const doc = parseConfigText(withAnchors, 'anchors.yaml', {})
    expect(() => validateConfig(doc, 'anchors.yaml')).not.toThrow()
    expect(validate(doc), JSON.stringify(validate.errors)).toBe(true)

    const stray = { ...(doc as object), 'y-defaults': {} }
    expect(() => validateConfig(stray, 'stray.yaml')).toThrow(/y-defaults/)
    expect(validate(stray)).toBe(false)
    expect(validate.errors?.map((e) => e.params.additionalProperty)).toContain('y-defaults')
    // an x- key below the root is not ignored by igw, so the schema still refuses it there
    const nested = { ...(doc as object), admin: { 'x-note': 1 } }
    expect(() => validateConfig(nested, 'nested.yaml')).toThrow(/x-note/)
    expect(validate(nested)).toBe(false)
  })
})
