// Static analysis of a GraphQL document, pure and socket-free: selection depth (fragments
// expanded) and an estimated cost = Σ list size × (field weight + cost of its selection).
// Weights and list sizes come from settings, refined by @cost / @listSize of an optional
// schema (the directives Apollo's demand control and the IBM cost spec use).
import {
  buildASTSchema,
  getNamedType,
  getNullableType,
  isCompositeType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  OperationTypeNode,
  parse,
  type ConstDirectiveNode,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLNamedType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
  type VariableDefinitionNode,
} from 'graphql'
import { KnownDirectivesRule } from 'graphql/validation/rules/KnownDirectivesRule.js'
import { specifiedSDLRules } from 'graphql/validation/specifiedRules.js'
import { validateSDL } from 'graphql/validation/validate.js'

export interface CostSettings {
  defaultListSize: number
  objectCost: number
  scalarCost: number
  mutationCost: number
  slicingArguments: readonly string[]
}

export interface ListSizeSpec {
  assumedSize: number | undefined
  slicingArguments: readonly string[]
  /** Child fields the size applies to (connections: edges, nodes) instead of this field. */
  sizedFields: readonly string[]
}

/** What a schema file adds: weights and list sizes by "Type.field" and by type. */
export interface SchemaCostInfo {
  readonly schema: GraphQLSchema
  readonly fieldWeight: ReadonlyMap<string, number>
  readonly typeWeight: ReadonlyMap<string, number>
  readonly listSize: ReadonlyMap<string, ListSizeSpec>
}

const COST_DIRECTIVES = `
directive @cost(weight: Int!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION | INPUT_FIELD_DEFINITION | OBJECT | SCALAR | INTERFACE | UNION
directive @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
`
let costDirectives: DocumentNode | undefined

function directiveArgs(dirs: readonly ConstDirectiveNode[] | undefined, name: string): Map<string, ValueNode> | undefined {
  const d = dirs?.find((x) => x.name.value === name)
  if (d === undefined) return undefined
  return new Map((d.arguments ?? []).map((a) => [a.name.value, a.value]))
}

function intValue(v: ValueNode | undefined): number | undefined {
  return v?.kind === Kind.INT ? Number(v.value) : undefined
}

/**
 * A @cost weight: an Int (Apollo's demand control), or a numeric String (the IBM cost spec's
 * `weight: String!`, e.g. "2.5"), read as an Int only, it was silently ignored.
 */
function weightValue(v: ValueNode | undefined): number | undefined {
  if (v?.kind !== Kind.INT && v?.kind !== Kind.FLOAT && v?.kind !== Kind.STRING) return undefined
  const n = v.value.trim() === '' ? NaN : Number(v.value)
  return Number.isFinite(n) && n >= 0 ? n : undefined
}

/**
 * The SDL rules but known directives: a federation subgraph's schema uses directives it imports
 * through @link (@key, @shareable, …) without declaring them, and every such file was refused.
 * They mean nothing to the estimate; their arguments are still checked where they are declared.
 */
const SDL_RULES = specifiedSDLRules.filter((r) => r !== KnownDirectivesRule)

function stringList(v: ValueNode | undefined): string[] {
  if (v === undefined) return []
  if (v.kind === Kind.STRING) return [v.value]
  if (v.kind === Kind.LIST) return v.values.flatMap((x) => (x.kind === Kind.STRING ? [x.value] : []))
  return []
}

/** Build the schema (adding the directive definitions when the SDL does not declare them). */
export function loadCostSchema(sdl: string): SchemaCostInfo {
  const own = parse(sdl)
  // Each definition the file lacks, on its own: with both added whenever one was missing, a file
  // declaring only @cost (IBM's `weight: String!`) was refused for declaring it twice.
  const declared = new Set(own.definitions.flatMap((d) => (d.kind === Kind.DIRECTIVE_DEFINITION ? [d.name.value] : [])))
  const missing = (costDirectives ??= parse(COST_DIRECTIVES)).definitions.filter((d) => d.kind === Kind.DIRECTIVE_DEFINITION && !declared.has(d.name.value))
  const doc: DocumentNode = missing.length > 0 ? { ...own, definitions: [...missing, ...own.definitions] } : own
  const errors = validateSDL(doc, undefined, SDL_RULES)
  if (errors.length > 0) throw new Error(errors.map((e) => e.message).join('\n\n'))
  const schema = buildASTSchema(doc, { assumeValidSDL: true })
  const fieldWeight = new Map<string, number>()
  const typeWeight = new Map<string, number>()
  const listSize = new Map<string, ListSizeSpec>()
  for (const type of Object.values(schema.getTypeMap())) {
    if (type.name.startsWith('__')) continue
    const tw = weightValue(directiveArgs(type.astNode?.directives, 'cost')?.get('weight'))
    if (tw !== undefined) typeWeight.set(type.name, tw)
    if (!isObjectType(type) && !isInterfaceType(type)) continue
    for (const field of Object.values(type.getFields())) {
      const key = `${type.name}.${field.name}`
      const fw = weightValue(directiveArgs(field.astNode?.directives, 'cost')?.get('weight'))
      if (fw !== undefined) fieldWeight.set(key, fw)
      const ls = directiveArgs(field.astNode?.directives, 'listSize')
      if (ls !== undefined) {
        listSize.set(key, { assumedSize: intValue(ls.get('assumedSize')), slicingArguments: stringList(ls.get('slicingArguments')), sizedFields: stringList(ls.get('sizedFields')) })
      }
    }
  }
  return { schema, fieldWeight, typeWeight, listSize }
}

export interface Analysis {
  /** Deepest selection nesting over all operations (root fields are depth 1). */
  depth: number
  /** Estimated cost of the selected operation (at least 1). */
  cost: number
  operationType: 'query' | 'mutation' | 'subscription' | undefined
  /** Root field names of the selected operation (cache tags "Query.<field>", mutation tags). */
  rootFields: string[]
  /** True when a variable sized a list: the cost must be recomputed with each request's variables. */
  variableDependent: boolean
  /** True when the walk gave up (fragment explosion): the document is refused as too complex. */
  tooComplex: boolean
}

/** Nodes visited before a document is called too complex (fragment bombs expand exponentially). */
const MAX_VISITS = 50_000

class Walk {
  readonly settings: CostSettings
  readonly info: SchemaCostInfo | undefined
  readonly fragments: Map<string, FragmentDefinitionNode>
  readonly variables: Record<string, unknown> | undefined
  /** The variable definitions of the operation being walked (their defaults). */
  definitions: readonly VariableDefinitionNode[] | undefined = undefined
  readonly visiting = new Set<string>()
  maxDepth = 0
  visits = 0
  variableDependent = false

  constructor(settings: CostSettings, info: SchemaCostInfo | undefined, fragments: Map<string, FragmentDefinitionNode>, variables: Record<string, unknown> | undefined) {
    this.settings = settings
    this.info = info
    this.fragments = fragments
    this.variables = variables
  }

  argNumber(v: ValueNode): number | undefined {
    // An Int literal has no size limit in the grammar: "1" and 400 zeros is Infinity here.
    if (v.kind === Kind.INT) return Math.min(Number(v.value), Number.MAX_SAFE_INTEGER)
    if (v.kind === Kind.VARIABLE) {
      this.variableDependent = true
      const name = v.name.value
      const vars = this.variables
      if (vars !== undefined && Object.hasOwn(vars, name)) {
        const x = vars[name]
        return typeof x === 'number' && Number.isFinite(x) ? x : undefined
      }
      // Not sent: GraphQL runs the operation with the variable's default ($n: Int = 500), so
      // that is the size to price, not defaultListSize.
      const d = this.definitions?.find((def) => def.variable.name.value === name)?.defaultValue
      return d?.kind === Kind.INT ? Math.min(Number(d.value), Number.MAX_SAFE_INTEGER) : undefined
    }
    return undefined
  }

  /**
   * The largest slicing argument given, or undefined when none is. With the schema's field
   * definition, an argument not given (or given as an omitted variable) takes its default from
   * the schema (`entities(first: Int = 100)`), as the backend does.
   */
  slice(field: FieldNode, names: readonly string[], def?: GraphQLField<unknown, unknown>): number | undefined {
    let size: number | undefined
    for (const arg of field.arguments ?? []) {
      if (!names.includes(arg.name.value)) continue
      const n = this.argNumber(arg.value) ?? schemaDefault(def, arg.name.value)
      const v = n === undefined ? this.settings.defaultListSize : Math.max(0, n)
      size = size === undefined ? v : Math.max(size, v)
    }
    if (size === undefined && def !== undefined) {
      for (const a of def.args) {
        if (!names.includes(a.name)) continue
        const n = schemaDefault(def, a.name)
        if (n !== undefined) size = size === undefined ? Math.max(0, n) : Math.max(size, n)
      }
    }
    return size
  }

  selection(set: SelectionSetNode, parent: GraphQLNamedType | undefined, depth: number, sized: { fields: readonly string[]; size: number } | undefined): number {
    let total = 0
    for (const sel of set.selections) {
      if (++this.visits > MAX_VISITS) return total
      if (sel.kind === Kind.FIELD) {
        total += this.field(sel, parent, depth, sized)
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        const t = sel.typeCondition ? this.info?.schema.getType(sel.typeCondition.name.value) : parent
        total += this.selection(sel.selectionSet, t ?? parent, depth, sized)
      } else {
        const name = sel.name.value
        const frag = this.fragments.get(name)
        if (frag === undefined || this.visiting.has(name)) continue // unknown or cyclic: the backend rejects it
        this.visiting.add(name)
        total += this.selection(frag.selectionSet, this.info?.schema.getType(frag.typeCondition.name.value) ?? parent, depth, sized)
        this.visiting.delete(name)
      }
    }
    return total
  }

  field(f: FieldNode, parent: GraphQLNamedType | undefined, parentDepth: number, sized: { fields: readonly string[]; size: number } | undefined): number {
    const name = f.name.value
    // __typename is a leaf that costs nothing and nests nothing. The other meta fields
    // (__schema, __type) are walked as any field: their selections nest without bound
    // (__type { fields { type { fields … } } }) and aliases repeat them, so they count toward the
    // depth and the cost like fields the schema file does not know (an object, one item).
    if (name === '__typename') return 0
    const depth = parentDepth + 1
    if (depth > this.maxDepth) this.maxDepth = depth
    const s = this.settings
    const def = parent !== undefined && (isObjectType(parent) || isInterfaceType(parent)) ? parent.getFields()[name] : undefined
    let named: GraphQLNamedType | undefined
    let composite: boolean
    let size = 1
    let childSized: { fields: readonly string[]; size: number } | undefined
    let weight: number | undefined
    if (def !== undefined) {
      named = getNamedType(def.type)
      composite = isCompositeType(named)
      const key = `${parent!.name}.${name}`
      weight = this.info!.fieldWeight.get(key) ?? this.info!.typeWeight.get(named.name)
      const spec = this.info!.listSize.get(key)
      const isList = isListType(getNullableType(def.type))
      if (spec !== undefined) {
        const n = this.slice(f, spec.slicingArguments, def) ?? spec.assumedSize ?? s.defaultListSize
        if (spec.sizedFields.length) childSized = { fields: spec.sizedFields, size: n }
        else size = n
      } else if (isList) {
        size = this.slice(f, s.slicingArguments, def) ?? s.defaultListSize
      }
    } else {
      composite = f.selectionSet !== undefined
      size = this.slice(f, s.slicingArguments) ?? 1
    }
    if (sized !== undefined && sized.fields.includes(name)) size = sized.size
    weight ??= composite ? s.objectCost : s.scalarCost
    const child = f.selectionSet ? this.selection(f.selectionSet, named, depth, childSized) : 0
    return size * (weight + child)
  }
}

/** A numeric default of a field's argument in the schema file. */
function schemaDefault(def: GraphQLField<unknown, unknown> | undefined, arg: string): number | undefined {
  if (def === undefined) return undefined
  const v = def.args.find((a) => a.name === arg)?.defaultValue
  return typeof v === 'number' && Number.isFinite(v) ? Math.min(v, Number.MAX_SAFE_INTEGER) : undefined
}

function rootType(info: SchemaCostInfo | undefined, op: OperationDefinitionNode): GraphQLNamedType | undefined {
  if (info === undefined) return undefined
  const s = info.schema
  return (op.operation === OperationTypeNode.QUERY ? s.getQueryType() : op.operation === OperationTypeNode.MUTATION ? s.getMutationType() : s.getSubscriptionType()) ?? undefined
}

/** The operation a request runs: the named one, else the only one. */
export function selectOperation(doc: DocumentNode, operationName: string | undefined): OperationDefinitionNode | undefined {
  let found: OperationDefinitionNode | undefined
  for (const d of doc.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue
    if (operationName === undefined) {
      if (found !== undefined) return undefined
      found = d
    } else if (d.name?.value === operationName) {
      return d
    }
  }
  return found
}

/** Depth over every operation, cost and root fields of the selected one. */
export function analyzeDocument(doc: DocumentNode, operationName: string | undefined, variables: Record<string, unknown> | undefined, settings: CostSettings, info?: SchemaCostInfo): Analysis {
  const fragments = new Map<string, FragmentDefinitionNode>()
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d)
  const selected = selectOperation(doc, operationName)
  const walk = new Walk(settings, info, fragments, variables)
  let cost = 0
  for (const d of doc.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue
    walk.definitions = d.variableDefinitions
    const c = walk.selection(d.selectionSet, rootType(info, d), 0, undefined)
    if (d === selected) cost = c + (d.operation === OperationTypeNode.MUTATION ? settings.mutationCost : 0)
  }
  const rootFields: string[] = []
  if (selected !== undefined) collectRootFields(selected.selectionSet, fragments, rootFields, new Set())
  return {
    depth: walk.maxDepth,
    // Sizes multiply down the tree: past 2^53 the estimate means "too much", not a number to add
    // to (0 × ∞ below a huge list would be NaN, which no limit comparison refuses).
    cost: cost >= 1 ? Math.min(Math.ceil(cost), Number.MAX_SAFE_INTEGER) : Number.isNaN(cost) ? Number.MAX_SAFE_INTEGER : 1,
    operationType: selected?.operation as Analysis['operationType'],
    rootFields,
    variableDependent: walk.variableDependent,
    tooComplex: walk.visits > MAX_VISITS,
  }
}

function collectRootFields(set: SelectionSetNode, fragments: Map<string, FragmentDefinitionNode>, out: string[], seen: Set<string>): void {
  for (const sel of set.selections) {
    if (sel.kind === Kind.FIELD) {
      if (!sel.name.value.startsWith('__') && !out.includes(sel.name.value)) out.push(sel.name.value)
    } else if (sel.kind === Kind.INLINE_FRAGMENT) {
      collectRootFields(sel.selectionSet, fragments, out, seen)
    } else if (!seen.has(sel.name.value)) {
      seen.add(sel.name.value)
      const f = fragments.get(sel.name.value)
      if (f) collectRootFields(f.selectionSet, fragments, out, seen)
    }
  }
}
