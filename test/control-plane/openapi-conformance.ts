// Checks real responses against the control plane's OpenAPI document: the status must be
// documented for that operation, and the body must validate against its schema (ajv, 2020-12).
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import { expect } from 'vitest'

type Doc = { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: unknown }> }> }>>; components: Record<string, unknown> }

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => void

export class Conformance {
  readonly #doc: Doc
  readonly #ajv: Ajv2020
  readonly #cache = new Map<string, ValidateFunction>()
  /** "GET /v1/tenants 200" for every response checked. */
  readonly seen = new Set<string>()

  constructor(doc: unknown) {
    this.#doc = doc as Doc
    this.#ajv = new Ajv2020({ strict: false, allErrors: true })
    addFormats(this.#ajv)
    this.#ajv.addSchema({ $id: 'openapi.json', paths: this.#doc.paths, components: this.#doc.components })
  }

  /** Validate one real response; returns its parsed JSON body (undefined when it has none). */
  async check(res: Response, method: string, template: string): Promise<unknown> {
    const op = this.#doc.paths[template]?.[method.toLowerCase()]
    expect(op, `${method} ${template} is not in the OpenAPI document`).toBeDefined()
    const documented = op!.responses[String(res.status)]
    expect(documented, `${method} ${template} answered ${res.status}, which the document does not list`).toBeDefined()
    this.seen.add(`${method} ${template} ${res.status}`)
    const text = await res.text()
    const content = documented!.content
    if (content === undefined) {
      expect(text).toBe('')
      return undefined
    }
    const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim()
    const media = content[type]
    expect(media, `${method} ${template} ${res.status}: content-type ${type} not documented (${Object.keys(content).join(', ')})`).toBeDefined()
    if (type === 'text/event-stream') return text
    const body = JSON.parse(text) as unknown
    const key = `${template} ${method} ${res.status} ${type}`
    let validate = this.#cache.get(key)
    if (validate === undefined) {
      const pointer = `openapi.json#/paths/${template.replace(/~/g, '~0').replace(/\//g, '~1')}/${method.toLowerCase()}/responses/${res.status}/content/${type.replace(/\//g, '~1')}/schema`
      validate = this.#ajv.compile({ $ref: pointer })
      this.#cache.set(key, validate)
    }
    const ok = validate(body)
    expect(ok, `${method} ${template} ${res.status} does not match its schema: ${JSON.stringify(validate.errors?.slice(0, 3))}\n${text.slice(0, 500)}`).toBe(true)
    return body
  }
}
