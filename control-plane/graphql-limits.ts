// What one GraphQL admin request may ask for, decided before any resolver runs. Every check is
// pure (a string or a parsed document in, refusals out); graphql-admin.ts wires them into yoga.
//
// Why each limit exists: one viewer request with 100k aliases held the control plane's only
// event loop for 13 s (each alias is a store read), a 3000-level document overflowed the parser's
// stack (HTTP 500), and one mutation with 200 aliased setQuota calls committed 200 config versions,
// each audited and pushed to every proxy. The proxies' config streams and ACKs share that loop.
import { Kind, Lexer, OperationTypeNode, Source, TokenKind, type DocumentNode, type FragmentDefinitionNode, type OperationDefinitionNode, type SelectionSetNode } from 'graphql'
import { MAX_BODY } from './http-kit.ts'

export interface GraphQLLimits {
  /** Request body bytes (POST); the REST API's bound (http-kit's MAX_BODY), answered with 413. */
  maxBodyBytes: number
  /** Characters of the `query` string, checked before anything reads it. */
  maxDocumentChars: number
  /** Lexical tokens of the document (comments are not tokens), counted before parsing. */
  maxTokens: number
  /** Nesting of `{ [ (` together, counted before parsing: graphql-js parses recursively. */
  maxNesting: number
  /** Fields on the longest path, the root field counted as 1 (`{ quotas { kind } }` is 2). */
  maxDepth: number
  /** Aliases in one operation, each fragment counted every time it is spread. */
  maxAliases: number
  /** Root fields of one mutation (`__typename` aside). */
  maxMutationFields: number
}

/**
 * The admin schema is two levels deep (`quotas { kind }`); its documents are a few dozen tokens.
 * The largest document a tool sends is graphql-js' getIntrospectionQuery(): 15 levels deep (its
 * TypeRef fragment follows `ofType` nine times), 184 tokens, 1.9k characters. The limits admit it
 * and little more; docs/control-plane.md gives the reasoning for each number.
 */
export const ADMIN_GRAPHQL_LIMITS: Readonly<GraphQLLimits> = Object.freeze({
  maxBodyBytes: MAX_BODY,
  maxDocumentChars: 32 * 1024,
  maxTokens: 1_000,
  maxNesting: 32,
  maxDepth: 15,
  maxAliases: 30,
  maxMutationFields: 1,
})

export const LIMIT_NAMES = ['bodyBytes', 'documentChars', 'tokens', 'depth', 'aliases', 'mutationFields'] as const
export type LimitName = (typeof LIMIT_NAMES)[number]

export interface LimitRefusal {
  limit: LimitName
  max: number
  message: string
  /** Character offset in the document of the place to blame, when there is one. */
  position?: number
}

export function bodyTooLarge(limits: GraphQLLimits, declared?: number): LimitRefusal {
  const size = declared === undefined ? 'larger than' : `${declared} bytes, over`
  return { limit: 'bodyBytes', max: limits.maxBodyBytes, message: `request body is ${size} the GraphQL body limit of ${limits.maxBodyBytes} bytes` }
}

/**
 * Size, token count and bracket nesting of a document, from the lexer alone, stopping at the
 * first limit crossed: a 4 MiB document costs no more than its first `maxTokens` tokens. A syntax
 * error ends the scan without a refusal; the parser then reports it, having no more tokens to
 * read than were counted here.
 */
export function scanDocument(body: string, limits: GraphQLLimits): LimitRefusal | undefined {
  if (body.length > limits.maxDocumentChars) {
    return { limit: 'documentChars', max: limits.maxDocumentChars, message: `the GraphQL document is ${body.length} characters long; the document size limit is ${limits.maxDocumentChars}` }
  }
  const lexer = new Lexer(new Source(body))
  let tokens = 0
  let nesting = 0
  try {
    for (let t = lexer.advance(); t.kind !== TokenKind.EOF; t = lexer.advance()) {
      if (++tokens > limits.maxTokens) {
        return { limit: 'tokens', max: limits.maxTokens, message: `the GraphQL document has more than ${limits.maxTokens} tokens (the token limit)`, position: t.start }
      }
      if (t.kind === TokenKind.BRACE_L || t.kind === TokenKind.BRACKET_L || t.kind === TokenKind.PAREN_L) {
        if (++nesting > limits.maxNesting) {
          return {
            limit: 'depth',
            max: limits.maxDepth,
            message: `the GraphQL document nests brackets more than ${limits.maxNesting} levels deep; the depth limit is ${limits.maxDepth} nested fields`,
            position: t.start,
          }
        }
      } else if (t.kind === TokenKind.BRACE_R || t.kind === TokenKind.BRACKET_R || t.kind === TokenKind.PAREN_R) {
        nesting--
      }
    }
  } catch {
    return undefined
  }
  return undefined
}

/** What a selection set adds up to; a fragment's is the same wherever it is spread. */
interface Measure {
  depth: number
  aliases: number
}

const NONE: Measure = { depth: 0, aliases: 0 }

class DocumentWalk {
  readonly #fragments = new Map<string, FragmentDefinitionNode>()
  readonly #measured = new Map<string, Measure>()
  readonly #visiting = new Set<string>()

  constructor(doc: DocumentNode) {
    for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) this.#fragments.set(d.name.value, d)
  }

  measure(set: SelectionSetNode): Measure {
    let depth = 0
    let aliases = 0
    for (const sel of set.selections) {
      let m: Measure
      if (sel.kind === Kind.FIELD) {
        const sub = sel.selectionSet ? this.measure(sel.selectionSet) : NONE
        m = { depth: 1 + sub.depth, aliases: (sel.alias ? 1 : 0) + sub.aliases }
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        m = this.measure(sel.selectionSet)
      } else {
        m = this.fragment(sel.name.value)
      }
      if (m.depth > depth) depth = m.depth
      aliases += m.aliases
    }
    return { depth, aliases }
  }

  /** Unknown and cyclic spreads measure nothing: validation refuses those documents anyway. */
  fragment(name: string): Measure {
    const known = this.#measured.get(name)
    if (known !== undefined) return known
    const frag = this.#fragments.get(name)
    if (frag === undefined || this.#visiting.has(name)) return NONE
    this.#visiting.add(name)
    const m = this.measure(frag.selectionSet)
    this.#visiting.delete(name)
    this.#measured.set(name, m)
    return m
  }

  /** Root fields a mutation runs, through its fragments; `__typename` runs nothing. */
  rootFields(set: SelectionSetNode, seen: Set<string>): number {
    let n = 0
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) {
        if (!sel.name.value.startsWith('__')) n++
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        n += this.rootFields(sel.selectionSet, seen)
      } else {
        const frag = this.#fragments.get(sel.name.value)
        if (frag === undefined || seen.has(sel.name.value)) continue
        seen.add(sel.name.value)
        n += this.rootFields(frag.selectionSet, seen)
        seen.delete(sel.name.value)
      }
    }
    return n
  }
}

const opLabel = (op: OperationDefinitionNode): string => (op.name ? `${op.operation} "${op.name.value}"` : `the anonymous ${op.operation}`)

/**
 * Depth, aliases and mutation fields of every operation in a parsed document (any of them may be
 * the one a request names). The document has passed scanDocument, so the walk's recursion is
 * bounded by `maxNesting` and by the fragments that fit in `maxTokens`.
 */
export function checkDocument(doc: DocumentNode, limits: GraphQLLimits): LimitRefusal[] {
  const walk = new DocumentWalk(doc)
  const out: LimitRefusal[] = []
  for (const op of doc.definitions) {
    if (op.kind !== Kind.OPERATION_DEFINITION) continue
    const m = walk.measure(op.selectionSet)
    const where = op.loc ? { position: op.loc.start } : {}
    if (m.depth > limits.maxDepth) out.push({ limit: 'depth', max: limits.maxDepth, message: `${opLabel(op)} nests fields ${m.depth} levels deep; the depth limit is ${limits.maxDepth}`, ...where })
    if (m.aliases > limits.maxAliases) out.push({ limit: 'aliases', max: limits.maxAliases, message: `${opLabel(op)} uses ${m.aliases} aliases; the alias limit is ${limits.maxAliases}`, ...where })
    if (op.operation === OperationTypeNode.MUTATION) {
      const n = walk.rootFields(op.selectionSet, new Set())
      if (n > limits.maxMutationFields) {
        out.push({
          limit: 'mutationFields',
          max: limits.maxMutationFields,
          message: `${opLabel(op)} has ${n} mutation fields; at most ${limits.maxMutationFields} per request, because each one commits its own config version and audit entry and is pushed to every proxy: send one request per change`,
          ...where,
        })
      }
    }
  }
  return out
}
