// Tags, pure: which entities a GraphQL response holds ("Entity:42" and the type "Entity"),
// and the document rewrite that makes responses carry __typename next to every `id`.
import { Kind, print, visit, type DocumentNode, type FieldNode, type SelectionSetNode } from 'graphql'

/**
 * Adds "Type:id" for every object of `data` that has __typename and id, and "Type" too when
 * `withTypes` (a query's entry carries its types so a mutationTags entry can name a whole type;
 * a mutation invalidates only the entities it returned). False when `data` holds more than
 * `limit` objects: the walk stopped, and the tags are incomplete.
 */
export function collectEntityTags(data: unknown, out: Set<string>, withTypes: boolean, limit = 100_000): boolean {
  const stack: unknown[] = [data]
  let seen = 0
  while (stack.length) {
    const v = stack.pop()
    if (v === null || typeof v !== 'object') continue
    if (++seen > limit) return false
    if (Array.isArray(v)) {
      for (const x of v) if (x !== null && typeof x === 'object') stack.push(x)
      continue
    }
    const o = v as Record<string, unknown>
    const t = o.__typename
    const id = o.id
    if (typeof t === 'string' && (typeof id === 'string' || typeof id === 'number')) {
      out.add(`${t}:${id}`)
      if (withTypes) out.add(t)
    }
    for (const k in o) {
      const x = o[k]
      if (x !== null && typeof x === 'object') stack.push(x)
    }
  }
  return true
}

const TYPENAME: FieldNode = { kind: Kind.FIELD, name: { kind: Kind.NAME, value: '__typename' } }

function selectsUnaliased(set: SelectionSetNode, name: string): boolean {
  return set.selections.some((s) => s.kind === Kind.FIELD && s.name.value === name && s.alias === undefined)
}

/** Selects `__typename` unaliased and unconditionally (an `@include`/`@skip` may leave it out). */
function selectsTypename(set: SelectionSetNode): boolean {
  return set.selections.some((s) => s.kind === Kind.FIELD && s.name.value === '__typename' && s.alias === undefined && !s.directives?.length)
}

const injected = new WeakMap<DocumentNode, string | null>()

/**
 * The query text with `__typename` added to every selection set that selects `id` without
 * it (what Apollo Client does on its own), or undefined when nothing needed adding. A
 * `__typename @include(if: $x)` does not count: with $x false the entity came back untagged,
 * and a mutation of it left the cached copy stale.
 */
export function withTypenames(doc: DocumentNode): string | undefined {
  const cached = injected.get(doc)
  if (cached !== undefined) return cached ?? undefined
  let changed = false
  const out = visit(doc, {
    SelectionSet(node) {
      if (!selectsUnaliased(node, 'id') || selectsTypename(node)) return undefined
      changed = true
      return { ...node, selections: [...node.selections, TYPENAME] }
    },
  })
  const text = changed ? print(out) : null
  injected.set(doc, text)
  return text ?? undefined
}

/** Root field names of the operation a request runs (fragments followed). */
export function rootFieldsOf(doc: DocumentNode, operationName: string | undefined): string[] {
  let op
  for (const d of doc.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue
    if (operationName === undefined ? op === undefined : d.name?.value === operationName) op = d
    else if (operationName === undefined) return [] // ambiguous: the backend will refuse it
  }
  if (op === undefined) return []
  const frags = new Map<string, SelectionSetNode>()
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) frags.set(d.name.value, d.selectionSet)
  const out: string[] = []
  const seen = new Set<string>()
  const walk = (set: SelectionSetNode): void => {
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) {
        if (!s.name.value.startsWith('__') && !out.includes(s.name.value)) out.push(s.name.value)
      } else if (s.kind === Kind.INLINE_FRAGMENT) {
        walk(s.selectionSet)
      } else if (!seen.has(s.name.value)) {
        seen.add(s.name.value)
        const f = frags.get(s.name.value)
        if (f) walk(f)
      }
    }
  }
  walk(op.selectionSet)
  return out
}
