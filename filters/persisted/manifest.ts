// The persisted-documents manifest compiled for the hot path: documents parsed and analysed
// once per config version, hints serialized once per id, lookups by id, by document hash and by normalized text.
import { createHash } from 'node:crypto'
import { Kind, parse, print, type DefinitionNode, type DocumentNode } from 'graphql'
import type { PersistedDocumentsConfig } from '../../config/persisted-documents.ts'
import type { Tier } from '../../config/primitives.ts'
import { analyzeDocument, type Analysis, type CostSettings, type SchemaCostInfo } from './document-analysis.ts'

/** What reaches the backend as extensions.costHints and (base64url JSON) x-igw-cost-hints. */
export interface CostHints {
  id: string
  cost: number
  costSource: 'hint' | 'estimate'
  timeoutMs?: number
  plannerHints?: string[]
  tier?: Tier
}

export interface PersistedOperation {
  readonly id: string
  readonly document: string
  readonly docHash: string
  readonly ast: DocumentNode
  readonly analysis: Analysis
  readonly costUnits: number | undefined
  readonly timeoutMs: number | undefined
  readonly tier: Tier | undefined
  /** Prebuilt when the cost does not depend on variables. */
  readonly hints: CostHints | undefined
  readonly hintsHeader: string | undefined
  readonly plannerHints: readonly string[]
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

export function encodeHints(h: CostHints): string {
  return Buffer.from(JSON.stringify(h)).toString('base64url')
}

export function hintsFor(op: PersistedOperation, cost: number): CostHints {
  const h: CostHints = { id: op.id, cost, costSource: op.costUnits !== undefined ? 'hint' : 'estimate' }
  if (op.timeoutMs !== undefined) h.timeoutMs = op.timeoutMs
  if (op.plannerHints.length) h.plannerHints = [...op.plannerHints]
  if (op.tier !== undefined) h.tier = op.tier
  return h
}

/** Normalized forms per parsed document (the proxy caches ASTs by query text, so this hits by identity). */
const shapes = new WeakMap<DocumentNode, string>()

const definitionName = (d: DefinitionNode): string => ('name' in d && d.name !== undefined ? d.name.value : '')

/**
 * A document as Apollo Router's safelist compares it: operations, then fragments, each sorted by
 * name, printed (whitespace, commas and comments do not count). Apollo Client prints its fragments
 * in whatever order its documents were composed, while Apollo's manifest generator sorts them.
 */
function shapeOf(doc: DocumentNode): string {
  let s = shapes.get(doc)
  if (s === undefined) {
    const ops = doc.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION)
    const frags = doc.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION)
    const byName = (a: DefinitionNode, b: DefinitionNode) => (definitionName(a) < definitionName(b) ? -1 : definitionName(a) > definitionName(b) ? 1 : 0)
    s = print({ kind: Kind.DOCUMENT, definitions: [...ops.sort(byName), ...frags.sort(byName)] })
    shapes.set(doc, s)
  }
  return s
}

export class Manifest {
  readonly byId = new Map<string, PersistedOperation>()
  readonly byHash = new Map<string, PersistedOperation>()
  readonly #byShape = new Map<string, PersistedOperation>()

  constructor(cfg: PersistedDocumentsConfig, settings: CostSettings, info: SchemaCostInfo | undefined) {
    for (const [id, op] of Object.entries(cfg.operations)) {
      const ast = parse(op.document, { noLocation: true })
      const analysis = analyzeDocument(ast, undefined, undefined, settings, info)
      const staticCost = op.costUnits !== undefined || !analysis.variableDependent
      const partial = {
        id,
        document: op.document,
        docHash: sha256Hex(op.document),
        ast,
        analysis,
        costUnits: op.costUnits,
        timeoutMs: op.timeoutMs,
        tier: op.tier,
        plannerHints: op.plannerHints,
        hints: undefined,
        hintsHeader: undefined,
      }
      let compiled: PersistedOperation = partial
      if (staticCost) {
        const hints = hintsFor(partial, op.costUnits ?? analysis.cost)
        compiled = { ...partial, hints, hintsHeader: encodeHints(hints) }
      }
      this.byId.set(id, compiled)
      // The first id wins when two ids name the same document text.
      if (!this.byHash.has(compiled.docHash)) this.byHash.set(compiled.docHash, compiled)
      const shape = shapeOf(ast)
      if (!this.#byShape.has(shape)) this.#byShape.set(shape, compiled)
    }
  }

  /** The operation whose document is `doc` but for ignored tokens and the order of its definitions. */
  byShape(doc: DocumentNode): PersistedOperation | undefined {
    return this.#byShape.get(shapeOf(doc))
  }

  /** By id, else by the sha256 of the document (clients that hash the manifest body). */
  lookup(idOrHash: string): PersistedOperation | undefined {
    // A hex digest in upper case names the same document (the APQ check accepts either case).
    return this.byId.get(idOrHash) ?? this.byHash.get(idOrHash) ?? (idOrHash.length === 64 ? this.byHash.get(idOrHash.toLowerCase()) : undefined)
  }
}
