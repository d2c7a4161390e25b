// Which parts of a GraphQL response hold a listed response path, in the response's own keys.
// Response paths are configured as field names ("entities", "user.contacts"), but a response
// is keyed by alias: `{ x: entities { email } }` answers under data.x. So the operation is
// walked (through inline fragments and fragment spreads) along each configured path by field
// name, and every response key it reaches joins the scope. A client choosing an alias, or many,
// must not take a listed field out of DLP.
import { Kind, getOperationAST, type DocumentNode, type FieldNode, type FragmentDefinitionNode, type SelectionSetNode } from 'graphql'
import { MAX_SCOPE_PATHS } from './json-rewriter.ts'

export interface GraphqlExportMatch {
  /** The operation selects a listed path (by field name or response key), or a top-level fragment. */
  matched: boolean
  /** Key paths from the root, `errors` and `extensions` included; undefined: transform the whole response. */
  paths: string[][] | undefined
}

/**
 * Selections looked at per request before giving up (the whole response is then in scope):
 * fragments spreading others twice grow exponentially, and a hostile document must cost little.
 */
const MAX_SELECTIONS = 10_000

class TooLarge extends Error {}

interface Walk {
  fragments: ReadonlyMap<string, FragmentDefinitionNode>
  budget: number
}

/** Fields of a selection set, fragments flattened (each fragment once per path: cycles end). */
function fieldsOf(set: SelectionSetNode | undefined, w: Walk, out: FieldNode[], seen: Set<string>): FieldNode[] {
  if (set === undefined) return out
  for (const sel of set.selections) {
    if (--w.budget < 0) throw new TooLarge()
    if (sel.kind === Kind.FIELD) out.push(sel)
    else if (sel.kind === Kind.INLINE_FRAGMENT) fieldsOf(sel.selectionSet, w, out, seen)
    else {
      const name = sel.name.value
      const def = w.fragments.get(name)
      if (def === undefined || seen.has(name)) continue
      seen.add(name)
      fieldsOf(def.selectionSet, w, out, seen)
      seen.delete(name)
    }
  }
  return out
}

/**
 * `configured`: the response paths as field names, e.g. [["entities"], ["user", "contacts"]].
 * Throws when the document does not parse (the caller decides what that means).
 */
export function graphqlExportMatch(doc: DocumentNode, operationName: string | undefined, configured: readonly (readonly string[])[]): GraphqlExportMatch {
  const op = getOperationAST(doc, operationName)
  if (op === null || op === undefined) return { matched: false, paths: undefined }
  const fragments = new Map<string, FragmentDefinitionNode>()
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d)
  const roots = new Set(configured.map((p) => p[0]!))
  let matched = false
  for (const sel of op.selectionSet.selections) {
    if (sel.kind !== Kind.FIELD || roots.has(sel.alias?.value ?? sel.name.value)) matched = true
  }
  const found = new Set<string>()
  const paths: string[][] = []
  const add = (p: string[]) => {
    const key = p.join('\u0000')
    if (found.has(key)) return
    found.add(key)
    paths.push(p)
  }
  // The configured paths stay in scope (what fills them, whatever field it is), plus every
  // response key a listed field is answered under.
  for (const p of configured) add(['data', ...p])
  const walk = (fields: FieldNode[], path: readonly string[], level: number, prefix: string[]) => {
    for (const f of fields) {
      if (f.name.value !== path[level]) continue
      const at = [...prefix, f.alias?.value ?? f.name.value]
      if (level === path.length - 1) {
        matched = true
        add(['data', ...at])
      } else walk(fieldsOf(f.selectionSet, w, [], new Set()), path, level + 1, at)
      if (paths.length > MAX_SCOPE_PATHS) return
    }
  }
  const w: Walk = { fragments, budget: MAX_SELECTIONS }
  try {
    const top = fieldsOf(op.selectionSet, w, [], new Set())
    for (const p of configured) {
      walk(top, p, 0, [])
      // room for `errors` and `extensions`: a path past MAX_SCOPE_PATHS is not tracked
      if (paths.length > MAX_SCOPE_PATHS - 2) return { matched, paths: undefined }
    }
  } catch (err) {
    if (!(err instanceof TooLarge)) throw err
    return { matched: true, paths: undefined }
  }
  // Beside `data`, what the server writes itself may echo values: error messages and their
  // extensions, and the response's top-level `extensions` (debug and validation details, a
  // gateway's subgraph errors and HTTP details). Left unread, an SSN echoed there went out as is.
  add(['errors'])
  add(['extensions'])
  return { matched, paths }
}

/**
 * Field-name hints the response's keys lose to aliases: for each alias the document gives a
 * field, the hints of that field's name the alias itself lacks (`{ entities { a: ssn } }`:
 * "a" → the SSN hint). A response is keyed by alias, and the rules read a bare `123456789` or a
 * national `(202) 555-0143` as a value only beside a field name that says what it is: without
 * this, a client renaming the field took the value out of DLP. Every definition is walked once
 * (fragments are not expanded), so the cost is linear in the document.
 */
export function aliasFieldHints(doc: DocumentNode, hintOf: (name: string) => number): Map<string, number> {
  const out = new Map<string, number>()
  const stack: SelectionSetNode[] = []
  for (const d of doc.definitions) {
    if (d.kind === Kind.OPERATION_DEFINITION || d.kind === Kind.FRAGMENT_DEFINITION) stack.push(d.selectionSet)
  }
  while (stack.length > 0) {
    const set = stack.pop()!
    for (const sel of set.selections) {
      if (sel.kind === Kind.FRAGMENT_SPREAD) continue
      if (sel.kind === Kind.FIELD && sel.alias !== undefined && sel.alias.value !== sel.name.value) {
        const alias = sel.alias.value
        const lost = hintOf(sel.name.value) & ~hintOf(alias)
        if (lost !== 0) out.set(alias, (out.get(alias) ?? 0) | lost)
      }
      if (sel.selectionSet !== undefined) stack.push(sel.selectionSet)
    }
  }
  return out
}
