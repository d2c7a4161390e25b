// Tags, pure: which entities a GraphQL response holds ("Entity:42" and the type "Entity"),
// and the document rewrite that makes responses carry __typename next to every `id`. An object's
// id is its `id`, else its `_id`, as Apollo Client's default identifies objects (MongoDB-style
// schemas): entities keyed `_id` were stored untagged, and a mutation returning one left the
// cached copy stale until its TTL.
import { Kind, print, visit, type DocumentNode, type FieldNode, type SelectionSetNode } from 'graphql'

/**
 * Response keys under which a document selects `id` or `__typename` besides their own names
 * (`uid: id`): an entity whose id came back only under an alias was stored untagged, and a
 * mutation returning it left the cached copy stale. Document-wide, not per selection set: an
 * alias also used for another field elsewhere may add a tag the object does not deserve, which
 * only invalidates it more often.
 */
export interface EntityKeys {
  ids: readonly string[]
  types: readonly string[]
}

const aliasesOf = new WeakMap<DocumentNode, EntityKeys | null>()

/** The document's aliases of `id` and `__typename`; undefined when it has none. */
export function entityKeys(doc: DocumentNode): EntityKeys | undefined {
  const known = aliasesOf.get(doc)
  if (known !== undefined) return known ?? undefined
  const ids = new Set<string>()
  const types = new Set<string>()
  visit(doc, {
    Field(node) {
      const alias = node.alias?.value
      if (alias === undefined || alias === node.name.value) return
      if (node.name.value === 'id' || node.name.value === '_id') ids.add(alias)
      else if (node.name.value === '__typename') types.add(alias)
    },
  })
  const keys = ids.size === 0 && types.size === 0 ? null : { ids: [...ids], types: [...types] }
  aliasesOf.set(doc, keys)
  return keys ?? undefined
}

function isId(v: unknown): v is string | number {
  return typeof v === 'string' || typeof v === 'number'
}

/** The object's __typename, or (with `keys`) its value under an alias the document gave it. */
function typenameOf(o: Record<string, unknown>, keys: EntityKeys | undefined): unknown {
  let t = o.__typename
  if (keys !== undefined) for (let i = 0; typeof t !== 'string' && i < keys.types.length; i++) t = o[keys.types[i]!]
  return t
}

/** The object's `id`, else `_id` (as Apollo Client identifies objects), else one under an alias. */
function idOf(o: Record<string, unknown>, keys: EntityKeys | undefined): unknown {
  let id = o.id
  if (!isId(id)) id = o._id
  if (keys !== undefined) for (let i = 0; !isId(id) && i < keys.ids.length; i++) id = o[keys.ids[i]!]
  return id
}

/**
 * Adds "Type:id" for every object of `data` that has __typename and id (under their names or,
 * with `keys`, under an alias the document gave them), and "Type" too when `withTypes` (a
 * query's entry carries its types so a mutationTags entry can name a whole type; a mutation
 * invalidates only the entities it returned). False when `data` holds more than `limit`
 * objects: the walk stopped, and the tags are incomplete.
 */
export function collectEntityTags(data: unknown, out: Set<string>, withTypes: boolean, limit = 100_000, keys?: EntityKeys): boolean {
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
    const t = typenameOf(o, keys)
    const id = idOf(o, keys)
    if (typeof t === 'string' && isId(id)) {
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

/**
 * Adds the type of every object a mutation's root fields returned (directly, or as items of a
 * list) that has a __typename but no id: it was written, but which one is unknown, so every entry
 * holding that type goes (the "Type" tag each query entry carries). `updateEntity(id: "4") { name }`
 * invalidated nothing, and the refetch an app makes after such a write (Apollo Client's
 * refetchQueries, the usual remedy when a mutation returns no id) got the old cached answer.
 * False when the root fields hold more than `limit` values: the walk stopped; or an object with
 * an id but no __typename (a document igw could not add it to: sent with its APQ hash, or
 * injectTypename off): an entity was written, which one cannot be named.
 */
export function unidentifiedRootTypes(data: unknown, out: Set<string>, limit = 100_000, keys?: EntityKeys): boolean {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return true
  const stack: unknown[] = Object.values(data as Record<string, unknown>)
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
    const t = typenameOf(o, keys)
    const id = idOf(o, keys)
    if (typeof t === 'string') {
      if (!isId(id)) out.add(t)
    } else if (isId(id)) return false
  }
  return true
}

const TYPENAME: FieldNode = { kind: Kind.FIELD, name: { kind: Kind.NAME, value: '__typename' } }

/** Selects `id` or `_id`, under its name or an alias (`uid: id`, tagged through entityKeys). */
function selectsId(set: SelectionSetNode): boolean {
  return set.selections.some((s) => s.kind === Kind.FIELD && (s.name.value === 'id' || s.name.value === '_id'))
}

/** Selects `__typename` unaliased and unconditionally (an `@include`/`@skip` may leave it out). */
function selectsTypename(set: SelectionSetNode): boolean {
  return set.selections.some((s) => s.kind === Kind.FIELD && s.name.value === '__typename' && s.alias === undefined && !s.directives?.length)
}

/**
 * The response key `__typename` is taken by another field somewhere in this set's merged
 * fields (`__typename: name`, directly or through its inline fragments and fragment spreads).
 */
function aliasTakesTypename(set: SelectionSetNode, frags: ReadonlyMap<string, SelectionSetNode>, seen: Set<string>): boolean {
  for (const s of set.selections) {
    if (s.kind === Kind.FIELD) {
      if (s.alias?.value === '__typename' && s.name.value !== '__typename') return true
    } else if (s.kind === Kind.INLINE_FRAGMENT) {
      if (aliasTakesTypename(s.selectionSet, frags, seen)) return true
    } else if (!seen.has(s.name.value)) {
      seen.add(s.name.value)
      const f = frags.get(s.name.value)
      if (f !== undefined && aliasTakesTypename(f, frags, seen)) return true
    }
  }
  return false
}

/** Names of the fragments spread (directly or nested) into set, outside nested fields. */
function spreadsIn(set: SelectionSetNode, frags: ReadonlyMap<string, SelectionSetNode>, out: Set<string>): void {
  for (const s of set.selections) {
    if (s.kind === Kind.INLINE_FRAGMENT) spreadsIn(s.selectionSet, frags, out)
    else if (s.kind === Kind.FRAGMENT_SPREAD && !out.has(s.name.value)) {
      out.add(s.name.value)
      const f = frags.get(s.name.value)
      if (f !== undefined) spreadsIn(f, frags, out)
    }
  }
}

const injected = new WeakMap<DocumentNode, string | null>()

/**
 * The query text with `__typename` added to every selection set that selects `id` or `_id` (aliased
 * or not) without it (what Apollo Client does on its own), or undefined when nothing needed adding. A
 * `__typename @include(if: $x)` does not count: with $x false the entity came back untagged,
 * and a mutation of it left the cached copy stale.
 */
export function withTypenames(doc: DocumentNode): string | undefined {
  const cached = injected.get(doc)
  if (cached !== undefined) return cached ?? undefined
  const frags = new Map<string, SelectionSetNode>()
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) frags.set(d.name.value, d.selectionSet)
  // Where an alias already answers under `__typename` (`{ user { id __typename: name } }`), an
  // added `__typename` is a field conflict the backend refuses: a query that worked without the
  // cache failed with it. Nothing is added there (nor in the inline fragments and fragments
  // merged into it); its entities stay untagged there (collectEntityTags reads the alias's value
  // as a type: a tag no mutation names), so a mutation of one may leave the cached copy stale
  // until its TTL — a rare document, and better than breaking it.
  const taken = new Set<SelectionSetNode>()
  const takenFrags = new Set<string>()
  visit(doc, {
    SelectionSet(node, _k, parent) {
      // A scope: the fields one object's response merges (inline fragments belong to their parent's).
      if (parent === undefined || Array.isArray(parent) || (parent as { kind: Kind }).kind === Kind.INLINE_FRAGMENT) return
      if (aliasTakesTypename(node, frags, new Set())) {
        taken.add(node)
        spreadsIn(node, frags, takenFrags)
      }
    },
  })
  const needs: SelectionSetNode[] = []
  const out = visit(doc, {
    SelectionSet(node, _k, parent, _path, ancestors) {
      if (!selectsId(node) || selectsTypename(node)) return undefined
      if (inTakenScope(node, [...ancestors, parent], taken, takenFrags)) return undefined
      needs.push(node)
      return { ...node, selections: [...node.selections, TYPENAME] }
    },
  })
  const text = needs.length === 0 ? null : (inPlace(doc, needs) ?? print(out))
  injected.set(doc, text)
  return text ?? undefined
}

/**
 * The document's own text with ` __typename` written before the closing brace of each of `sets`,
 * everything else as the client wrote it: a backend's error locations (line, column) still point
 * into the client's text, which a re-printed document had moved. Undefined without source
 * locations (a document parsed with noLocation): the caller prints the edited tree instead.
 */
function inPlace(doc: DocumentNode, sets: readonly SelectionSetNode[]): string | undefined {
  const body = doc.loc?.source.body
  if (body === undefined) return undefined
  const at: number[] = []
  for (const set of sets) {
    const end = set.loc?.end
    // `}` ends a selection set (loc.end is exclusive); anything else means the locations lie.
    if (end === undefined || body.charCodeAt(end - 1) !== 0x7d) return undefined
    at.push(end - 1)
  }
  at.sort((a, b) => a - b)
  let text = ''
  let from = 0
  for (const i of at) {
    text += `${body.slice(from, i)} __typename`
    from = i
  }
  return text + body.slice(from)
}

/**
 * node's scope is taken: the set of the nearest field, operation or fragment definition (node
 * itself, or the one its inline fragments sit in); a fragment's too when it is spread into a taken one.
 */
function inTakenScope(node: SelectionSetNode, chain: readonly unknown[], taken: ReadonlySet<SelectionSetNode>, takenFrags: ReadonlySet<string>): boolean {
  for (let i = chain.length - 1; i >= 0; i--) {
    const a = chain[i] as { kind?: Kind; selectionSet?: SelectionSetNode; name?: { value: string } }
    if (a.kind !== Kind.FIELD && a.kind !== Kind.OPERATION_DEFINITION && a.kind !== Kind.FRAGMENT_DEFINITION) continue
    if (a.kind === Kind.FRAGMENT_DEFINITION && takenFrags.has(a.name!.value)) return true
    return taken.has(a.selectionSet!)
  }
  return taken.has(node)
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
