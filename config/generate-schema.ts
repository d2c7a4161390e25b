// Writes config/schema.json from the zod schema (the source of truth). CI checks it is current:
// `node config/generate-schema.ts --check` exits 1 when the committed file is stale.
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { z } from 'zod'
import { gatewayConfigObject } from './schema.ts'

const zodCheckFormats = new Set(['starts_with', 'ends_with', 'includes'])

export function renderConfigJsonSchema(): string {
  const schema = z.toJSONSchema(gatewayConfigObject, {
    io: 'input',
    unrepresentable: 'any',
    target: 'draft-2020-12',
    // zod names its string checks as formats ("starts_with", …) beside the pattern that carries them; no
    // JSON Schema format has those names, and a strict validator (ajv, ajv-cli) refuses the whole schema.
    override: ({ jsonSchema }) => {
      if (jsonSchema.format !== undefined && zodCheckFormats.has(jsonSchema.format)) delete jsonSchema.format
    },
  })
  // Top-level `x-` keys are ignored by validateConfig (as in docker-compose: `x-defaults: &d {…}` only
  // holds anchors); without this the strict root made editors flag them.
  const patternProperties = { '^x-': { description: 'ignored by igw: a place for YAML anchors that entries merge (`<<: *name`)' } }
  return `${JSON.stringify({ ...schema, patternProperties, $id: 'https://intelgraph.dev/igw/config.schema.json', title: 'IntelGraph Gateway config' }, null, 2)}\n`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const target = fileURLToPath(new URL('./schema.json', import.meta.url))
  const rendered = renderConfigJsonSchema()
  if (process.argv.includes('--check')) {
    let current = ''
    try {
      current = readFileSync(target, 'utf8')
    } catch {}
    if (current !== rendered) {
      console.error('config/schema.json is stale: run `npm run schema` and commit it')
      process.exit(1)
    }
  } else {
    writeFileSync(target, rendered)
    console.log(`wrote ${target}`)
  }
}
