// Reading a config document: text → YAML/JSON with ${ENV} values put into its scalars → zod. Every failure
// becomes a ConfigError whose lines name the exact place ("routes[1].upstream: …").
import { readFileSync } from 'node:fs'
import { extname } from 'node:path'
import { isAlias, isCollection, isPair, isScalar, isSeq, parseDocument, visit, type Document, type Node, type Scalar } from 'yaml'
import type { z } from 'zod'
import { isSecretPath, isWebhookUrlPath, redactUrlCredentials } from './redact.ts'
import { gatewayConfig, type GatewayConfig } from './schema.ts'

export class ConfigError extends Error {
  readonly problems: string[]
  constructor(source: string, problems: string[]) {
    super(`${source}: invalid config\n  ${problems.join('\n  ')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

// The last alternative is any other "${": a form igw does not read (${PORT-80}, ${X:?msg},
// ${A:-${B}}, ${ X }, an unclosed one) is an error, never a literal "${PORT-80}" in the config.
// A default ends on its line: one left unclosed (`# set ${LEVEL:-info to change`) ran to the next
// "}" lines below and silently took every line in between out of the document.
const ENV_REF = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}$\r\n]|\$(?!\{))*))?\}|\$\{/g

/**
 * The character that marks a reference in the text while the YAML is parsed (padded with more of
 * it to the reference's length): one of the Private Use Area the text does not hold, so no text
 * of the document's own reads as a mark. A fixed "§" did: a literal `§0§§` became the value of
 * the first reference. One UTF-16 unit, so error columns stay true; undefined when the text
 * holds every one of them. Written as an escape ("\ue000" in a double-quoted scalar) counts too.
 */
function markChar(text: string): string | undefined {
  const used = new Uint8Array(0xf900 - 0xe000)
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i) - 0xe000
    if (c >= 0 && c < used.length) used[c] = 1
  }
  for (const m of text.matchAll(/\\(?:u|U0000)([eEfF][0-9a-fA-F]{3})/g)) {
    const c = Number.parseInt(m[1]!, 16) - 0xe000
    if (c < used.length) used[c] = 1
  }
  const free = used.indexOf(0)
  return free === -1 ? undefined : String.fromCharCode(0xe000 + free)
}

interface Marked {
  text: string
  mark: string
  /** What each mark stands for, how many padding marks follow its number, and what is wrong with it. */
  refs: { value: string; pad: number; literal: boolean; problem?: string }[]
}

/**
 * ${NAME} and ${NAME:-default} (an empty variable takes the default); "$$" is a literal "$";
 * references in YAML comments need nothing (the parser drops them). A missing variable without a default is an error naming
 * it and its line, never a silent empty string. References are replaced by marks of the same
 * length (error columns stay true), the YAML is parsed, and values go into the parsed scalars —
 * never into the text, where `s3cr #t` would end at the comment and a value holding a newline
 * or `key: x` would add to the document.
 */
function markEnvRefs(text: string, env: NodeJS.ProcessEnv, mark: string): Marked {
  const refs: Marked['refs'] = []
  const out = text.replace(ENV_REF, (match, name: string | undefined, def: string | undefined, offset: number) => {
    // Every reference is marked, comments included; what is wrong with one (an unset variable,
    // another tool's "${PORT-80}") is an error only if its mark lands in a value. The parser
    // drops comments, so documenting "${VAR}" in one needs no VAR; and a " #" inside a block
    // scalar or a multi-line quoted value is text, not a comment: a line scan took it for one
    // and left that line's "${VAR}" in the config as literal text, unsubstituted and unreported.
    let value: string
    let problem: string | undefined
    if (match === '$$') value = '$'
    else if (match === '${') {
      const line = text.slice(0, offset).split('\n').length
      // Up to its "}" or the end of its line (a CRLF file's "\r" is no part of it).
      const rest = /^[^\r\n]*?(?:\}|(?=[\r\n])|$)/.exec(text.slice(offset))![0]
      const shown = rest.length > 40 ? `${rest.slice(0, 39)}…` : rest
      problem = `line ${line}: ${JSON.stringify(shown)} is not a reference igw reads: write \${NAME} or \${NAME:-default} (NAME of letters, digits and "_"; no nesting), or $\${ for a literal "\${"`
      value = ''
    } else {
      const v = env[name!]
      if (v !== undefined && v !== '') value = v
      // "$$" is a literal "$" in a default too: `${DB_PASS:-pa$$word}` meant pa$word, not pa$$word.
      else if (def !== undefined) value = def.replaceAll('$$', '$')
      else {
        const line = text.slice(0, offset).split('\n').length
        // Set but empty reads as unset (as ${X:-d} does in a shell); the message says which it was.
        problem = `line ${line}: environment variable ${name} is ${v === '' ? 'empty' : 'not set'} and has no default (write \${${name}:-value})`
        value = ''
      }
    }
    const head = `${mark}${refs.length}`
    const pad = Math.max(1, match.length - head.length)
    refs.push(problem === undefined ? { value, pad, literal: match === '$$' } : { value, pad, literal: false, problem })
    return head + mark.repeat(pad)
  })
  return { text: out, mark, refs }
}

/**
 * A plain (unquoted) scalar that is one reference takes the type YAML would give the value
 * (`workers: ${W}` is a number, `enabled: ${F}` a boolean, an empty value null) — only when the
 * whole value is one such scalar; anything else (a comment, a map, an alias) stays the string.
 */
function typedValue(value: string): unknown {
  if (value === '') return null
  const d = parseDocument(value)
  const c = d.contents
  if (d.errors.length === 0 && isScalar(c) && c.type === 'PLAIN' && c.source === value && c.comment == null && d.comment == null && typeof c.value !== 'string') return c.value
  return value
}

const YAML_TAG = 'tag:yaml.org,2002:'
const STR_TAG = `${YAML_TAG}str`
/** YAML's own tags whose values JSON has, as written. */
const JSON_TAGS = new Set(['!!map', '!!seq', '!!str', '!!int', '!!float', '!!bool', '!!null'])

/**
 * Put the values of the marks into the parsed document's scalars (keys included, added to
 * `substitutedKeys`). Returns the problems of the references that landed in one, in document order.
 */
function substituteRefs(doc: Document.Parsed, { mark: MARK, refs }: Marked, substitutedKeys: Set<Scalar>): string[] {
  const used = new Set<number>()
  visit(doc, {
    Scalar(key, node) {
      const src = node.value
      if (typeof src !== 'string' || !src.includes(MARK)) return
      if (key === 'key') substitutedKeys.add(node)
      let out = ''
      let whole: Marked['refs'][number] | undefined
      let count = 0
      let i = 0
      while (i < src.length) {
        const at = src.indexOf(MARK, i)
        if (at === -1) {
          out += src.slice(i)
          break
        }
        let j = at + 1
        while (j < src.length && src.charCodeAt(j) >= 48 && src.charCodeAt(j) <= 57) j++
        const n = Number(src.slice(at + 1, j))
        const ref = j > at + 1 ? refs[n] : undefined
        if (ref === undefined || src.slice(j, j + ref.pad) !== MARK.repeat(ref.pad)) {
          out += src.slice(i, at + 1) // not one of ours (markChar makes this unreachable)
          i = at + 1
          continue
        }
        out += src.slice(i, at) + ref.value
        if (ref.problem !== undefined) used.add(n)
        whole = at === 0 && j + ref.pad === src.length ? ref : undefined
        count++
        i = j + ref.pad
      }
      // An explicit `!!str ${ID}` asks for the string whatever the value looks like; a key is a
      // name, never typed (`${T}:` with T=007 is the key "007", see keysAsWritten).
      node.value = key !== 'key' && node.type === 'PLAIN' && node.tag !== STR_TAG && count === 1 && whole !== undefined && !whole.literal ? typedValue(whole.value) : out
    },
  })
  return [...used].sort((x, y) => x - y).map((n) => refs[n]!.problem!)
}

/**
 * A plain key that YAML reads as a number, boolean or null is the name as written: an object key
 * is a string, and toJS made it String(value) — tenant `007:` became "7", an account number
 * `12345678901234567890:` "12345678901234567000", `0x1F:` "31", `True:` "true", `~:` "" —
 * a config entry under a name nobody wrote, and the one written silently had none.
 */
function keysAsWritten(doc: Document.Parsed): void {
  visit(doc, {
    Pair(_key, pair) {
      const k = pair.key
      if (isScalar(k) && k.type === 'PLAIN' && k.tag === undefined && k.value !== undefined && typeof k.value !== 'string' && typeof k.value !== 'symbol' && typeof k.source === 'string') k.value = k.source
    },
  })
}

/**
 * What the document's aliases would expand it to, refused before toJS when it is a bomb or holds
 * itself. toJS shares an anchor's object among its aliases, but the checks after it (zod, the
 * "__proto__" scan) walk the expanded tree: `x: &x [*x]` (an alias inside its own anchor's node)
 * made a circular object they walked forever, a hung start or reload. The parser's own guard
 * (maxAliasCount) counts uses, not size: 101 tenants each `<<: *defaults` were refused as an
 * "alias bomb". Sizes are taken in document order, so an alias's anchor node is done before it
 * unless the alias is inside it.
 */
function aliasProblems(doc: Document.Parsed, lineOf: (offset: number) => number): string[] {
  const anchors = new Map<string, Node>()
  const sizes = new Map<Node, number>()
  let written = 0
  let cycle: Node | undefined
  const size = (node: unknown): number => {
    written++
    if (isAlias(node)) {
      const source = anchors.get(node.source)
      if (source === undefined) return 1 // unresolved: toJS says so
      const n = sizes.get(source)
      if (n === undefined) cycle ??= node
      return n ?? 1
    }
    if (!isCollection(node) && !isScalar(node)) return 1
    if (node.anchor) anchors.set(node.anchor, node)
    let n = 1
    if (isCollection(node)) for (const item of node.items) n += isPair(item) ? size(item.key) + size(item.value) : size(item)
    sizes.set(node, n)
    return n
  }
  const expanded = size(doc.contents)
  if (cycle !== undefined) {
    const at = cycle.range?.[0]
    return [`${at === undefined ? '' : `line ${lineOf(at)}: `}the alias ${String(cycle)} is inside the node its anchor names (a value that holds itself)`]
  }
  // Sharing one block among many entries stays well inside this; 9 levels of 9 aliases do not.
  if (expanded > 10 * written + 10_000) return [`(root): YAML aliases expand to too many nodes (${expanded} from ${written} written; an alias bomb such as "billion laughs"?)`]
  return []
}

/**
 * Where a key repeats one before it in its map, as the parser's own check (uniqueKeys) finds
 * them: a scalar equal in value (===), any other node only to itself. That check compares each
 * key with every earlier one: a config of 30,000 tenants took 11 s to parse (0.7 s without it),
 * every start and every reload, the supervisor's event loop blocked throughout.
 */
function duplicateKeyOffsets(doc: Document.Parsed): number[] {
  const out: number[] = []
  visit(doc, {
    Map(_key, map) {
      const seen = new Set<unknown>()
      for (const { key } of map.items) {
        const k: unknown = isScalar(key) ? key.value : key
        if (Number.isNaN(k)) continue // NaN !== NaN: `.nan` may repeat, as the parser allows
        if (!seen.has(k)) seen.add(k)
        else out.push((key as Node | null)?.range?.[0] ?? map.range?.[0] ?? 0)
      }
    },
  })
  return out
}

/** The config path (as formatPath shows it) of a node, from the ancestors `visit` passes. */
function nodePath(ancestors: readonly unknown[], node: unknown): PropertyKey[] {
  const chain = [...ancestors, node]
  const path: PropertyKey[] = []
  for (let i = 0; i < chain.length - 1; i++) {
    const n = chain[i]
    if (isPair(n)) path.push(isScalar(n.key) ? (n.key.value === null ? '' : String(n.key.value)) : '?')
    else if (isSeq(n)) path.push(n.items.indexOf(chain[i + 1] as never))
  }
  return path
}

/**
 * Keys the loaded object cannot hold as written. A map or list as a key (`? {a: 1} : x`, or an
 * alias of one) is only a warning to the parser, and toJS made it the text "[object Object]" or
 * "{ a: 1 }": a config entry under a name nobody wrote. And keys that are one key of the loaded
 * object but two to the parser, whose uniqueKeys compares values: `10042:` and `"10042":` (a
 * number and a string), `${T}:` and `acme:` before T=acme was in, or `*k :` and the key its
 * anchor names. The later entry silently replaced the earlier one (a tenant's tier, a route's upstream).
 */
function keyProblems(doc: Document.Parsed, substitutedKeys: ReadonlySet<Scalar>, lineOf: (offset: number) => number): string[] {
  const problems: string[] = []
  const at = (node: { range?: readonly number[] | null }) => (node.range?.[0] === undefined ? '' : `line ${lineOf(node.range[0])}: `)
  visit(doc, {
    Map(_key, map, ancestors) {
      const seen = new Map<string, unknown>()
      for (const pair of map.items) {
        const written = pair.key
        const key = isAlias(written) ? written.resolve(doc) : written
        if (isCollection(key)) {
          problems.push(`${at(written as Node)}${formatPath(nodePath(ancestors, map))}: a ${isSeq(key) ? 'list' : 'map'} used as a key; a key is a name`)
          continue
        }
        // A merge key (`<<`, whose value is a symbol) may repeat, as the parser allows.
        if (!isScalar(key) || typeof key.value === 'symbol') continue
        // The object key toJS makes of a scalar (null → '').
        const k = key.value === null ? '' : String(key.value)
        const first = seen.get(k)
        if (first === undefined) {
          seen.set(k, written)
          continue
        }
        const why =
          substitutedKeys.has(key) || substitutedKeys.has(first as Scalar)
            ? 'after ${…} substitution'
            : isAlias(written) || isAlias(first)
              ? 'one an alias of the other'
              : 'one quoted, one not: the same key once loaded'
        problems.push(`${at(written as Node)}key ${JSON.stringify(showKey(k))} appears twice in one map (${why}); each key may appear once`)
      }
    },
  })
  return problems
}

/** routes[1].filters[0].jwt — the path style of every message. */
export function formatPath(path: readonly PropertyKey[]): string {
  let s = ''
  for (const p of path) {
    if (typeof p === 'number') s += `[${p}]`
    else s += s === '' ? showKey(String(p)) : `.${showKey(String(p))}`
  }
  return s === '' ? '(root)' : s
}

/** A bad value, quoted for the message; a secret is described, never shown. */
function show(value: unknown, path: readonly PropertyKey[] = []): string {
  if (value === undefined) return 'nothing'
  if (isSecretPath(path)) {
    // Whatever its type: an unquoted `secret: ${JWT_SECRET}` whose value is all digits arrives
    // as a number, and "expected string, got 1234…" would print it.
    if (typeof value === 'string') return `a value of ${value.length} characters (not shown)`
    const kind = value === null ? 'null' : Array.isArray(value) ? 'list' : typeof value === 'object' ? 'map' : typeof value
    return kind === 'number' || kind === 'boolean' ? `a ${kind} (not shown; quote it, or write !!str \${VAR}, to keep it a string)` : `a ${kind} (not shown)`
  }
  let s: string
  try {
    s = JSON.stringify(value) ?? String(value)
  } catch {
    s = String(value)
  }
  // A webhook's URL may carry its credential in the path (Slack): described, not quoted.
  if (isWebhookUrlPath(path) && typeof value === 'string') return `a URL of ${value.length} characters (not shown: a webhook's path may be its credential)`
  s = redactUrlCredentials(s)
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}

/** One readable line per zod issue. */
// A document is the client's to make up (PUT /v1/config): thousands of long unknown keys must not
// become a megabyte answer and log line. Lists, keys and problems are bounded.
const MAX_PROBLEMS = 100
const MAX_KEYS_SHOWN = 5
const MAX_KEY_CHARS = 64
const clip = (k: string) => (k.length > MAX_KEY_CHARS ? `${k.slice(0, MAX_KEY_CHARS - 1)}…` : k)
// A key is quoted as the document wrote it, and a map keyed by URLs (`upstreams:`) may hold one
// with credentials: `upstreams.http://u:pw@api:1: not a valid name here` printed the password.
const showKey = (k: string) => clip(redactUrlCredentials(k))

export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  const lines: string[] = []
  for (const iss of issues) {
    const path = formatPath(iss.path)
    const input = (iss as { input?: unknown }).input
    switch (iss.code) {
      case 'unrecognized_keys': {
        const shown = iss.keys.slice(0, MAX_KEYS_SHOWN).map((k) => JSON.stringify(showKey(k)))
        const more = iss.keys.length - shown.length
        lines.push(`${path}: unknown key${iss.keys.length > 1 ? 's' : ''} ${shown.join(', ')}${more > 0 ? ` and ${more} more` : ''}`)
        break
      }
      case 'invalid_type':
        lines.push(input === undefined ? `${path}: required (expected ${iss.expected})` : `${path}: expected ${iss.expected}, got ${show(input, iss.path)}`)
        break
      case 'invalid_value':
        lines.push(`${path}: expected one of ${iss.values.map((v) => show(v)).join(' | ')}, got ${show(input, iss.path)}`)
        break
      case 'invalid_key': {
        // The key's own schema says what it takes when it has a message of its own (a persisted
        // operation id also takes ":@/+=~"); zod's generic one does not.
        const own = iss.issues[0]?.message
        lines.push(`${path}: ${own !== undefined && !own.startsWith('Invalid') ? `not a valid name here: ${own}` : 'not a valid name here (letters, digits, "_", "." or "-")'}`)
        break
      }
      case 'invalid_union': {
        // A discriminated union (a filter's `name`) names the value it did not know: "unknown
        // filter" alone sent the operator of a proxy older than its control plane (a NACK in GET
        // /v1/proxies, a filter that version added) to count list entries to find out which.
        const d = (iss as { discriminator?: unknown }).discriminator
        if (typeof d === 'string' && input !== null && typeof input === 'object' && !Array.isArray(input)) {
          const v = (input as Record<string, unknown>)[d]
          const got = `got ${v === undefined ? 'nothing' : show(v, iss.path)}`
          const message = iss.message === 'Invalid input' ? 'matches none of the allowed shapes' : iss.message
          // Before the list of known values ("unknown filter, got "geo-fence"; known filters: …").
          const cut = message.indexOf('; ')
          lines.push(`${path}: ${cut === -1 ? `${message}, ${got}` : `${message.slice(0, cut)}, ${got}${message.slice(cut)}`}`)
          break
        }
        lines.push(`${path}: ${iss.message === 'Invalid input' ? 'matches none of the allowed shapes' : iss.message}${input !== undefined && typeof input !== 'object' ? `, got ${show(input, iss.path)}` : ''}`)
        break
      }
      default: {
        const msg = iss.message.replace(/^Invalid input: /, '')
        lines.push(input !== undefined && typeof input !== 'object' ? `${path}: ${msg}, got ${show(input, iss.path)}` : `${path}: ${msg}`)
      }
    }
    if (lines.length === MAX_PROBLEMS && issues.length > MAX_PROBLEMS) {
      lines.push(`… and ${issues.length - MAX_PROBLEMS} more problems`)
      break
    }
  }
  return lines
}

/**
 * Where a document holds a "__proto__" key of its own (YAML and JSON.parse both make one). Zod
 * builds a map (`tenants:`, `upstreams:`, a topic's `variables`) by assignment, and assigning
 * "__proto__" sets the prototype: the entry vanished without a word, its key never checked. The
 * control plane's words for the same (store.ts checks its documents before this).
 */
function protoKeys(doc: unknown): string[] {
  interface Entry {
    value: unknown
    key?: PropertyKey
    parent?: Entry
  }
  const pathOf = (e: Entry): PropertyKey[] => {
    const path: PropertyKey[] = []
    for (let p: Entry | undefined = e; p?.key !== undefined; p = p.parent) path.unshift(p.key)
    return path
  }
  const problems: string[] = []
  const stack: Entry[] = [{ value: doc }]
  for (let e = stack.pop(); e !== undefined && problems.length < MAX_PROBLEMS; e = stack.pop()) {
    const value = e.value
    if (value === null || typeof value !== 'object') continue
    if (Array.isArray(value)) for (let i = 0; i < value.length; i++) stack.push({ value: value[i], key: i, parent: e })
    else {
      if (Object.hasOwn(value, '__proto__')) problems.push(`${formatPath([...pathOf(e), '__proto__'])}: "__proto__" is not allowed as a key`)
      for (const k in value) stack.push({ value: (value as Record<string, unknown>)[k], key: k, parent: e })
    }
  }
  return problems
}

/**
 * The document without its top-level `x-` keys: as in docker-compose, a block such as
 * `x-defaults: &defaults {…}` exists only to hold anchors for the entries that merge it, and the
 * strict root refused it as an unknown key.
 */
function withoutExtensions(doc: unknown): unknown {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc) || !Object.keys(doc).some((k) => k.startsWith('x-'))) return doc
  return Object.fromEntries(Object.entries(doc).filter(([k]) => !k.startsWith('x-')))
}

/** Validate an already-parsed document (top-level `x-` keys are ignored). */
export function validateConfig(doc: unknown, source = 'config'): GatewayConfig {
  const proto = protoKeys(doc)
  if (proto.length) throw new ConfigError(source, proto)
  const result = gatewayConfig.safeParse(withoutExtensions(doc), { reportInput: true })
  if (!result.success) throw new ConfigError(source, formatIssues(result.error.issues))
  return result.data
}

/** The 1-based line of an offset into text. */
function lineAt(text: string, offset: number): number {
  let line = 1
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) line++
  return line
}

const JSON_STRING = /"(?:[^"\\\u0000-\u001f]+|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y
const JSON_SCALAR = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.])|(?:true|false|null)(?!\w)/y

/**
 * Where marked text is not JSON (RFC 8259), as a problem line, or undefined. A reference may
 * stand for a whole value (`"workers": ${W}`, as in a template for envsubst). Iterative: a file
 * of "[" nested deep must not overflow the stack.
 */
function jsonSyntaxProblem(text: string, mark: string): string | undefined {
  const ref = new RegExp(`${mark}\\d+${mark}+`, 'y')
  const closers: string[] = []
  let expect: 'value' | 'key' | 'next' = 'value'
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0 // a byte-order mark, as JSON readers may skip
  const token = (re: RegExp) => {
    re.lastIndex = i
    if (!re.test(text)) return false
    i = re.lastIndex
    return true
  }
  for (;;) {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++
    const c = text[i]
    let expected: string | undefined
    if (expect === 'value') {
      if (c === '{' || c === '[') {
        closers.push(c === '{' ? '}' : ']')
        i++
        while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++
        if (text[i] === closers.at(-1)) {
          i++
          closers.pop()
          expect = 'next'
        } else expect = c === '{' ? 'key' : 'value'
        continue
      }
      if (token(JSON_STRING) || token(JSON_SCALAR) || token(ref)) expect = 'next'
      else expected = 'a value'
    } else if (expect === 'key') {
      if (token(JSON_STRING) || token(ref)) {
        while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++
        if (text[i] === ':') {
          i++
          expect = 'value'
        } else expected = '":" after the key'
      } else expected = 'a key in double quotes'
    } else if (closers.length === 0) {
      if (i === text.length) return undefined
      expected = 'the end of the document'
    } else if (c === ',') {
      i++
      expect = closers.at(-1) === '}' ? 'key' : 'value'
    } else if (c === closers.at(-1)) {
      i++
      closers.pop()
    } else expected = `"," or "${closers.at(-1)}"`
    if (expected === undefined) continue
    const got =
      c === undefined
        ? 'the end of the file'
        : (c === '}' || c === ']') && /,\s*$/.test(text.slice(Math.max(0, i - 256), i))
          ? `"${c}" (JSON allows no comma before it)`
          : c === "'"
            ? "a single quote (JSON strings take double quotes)"
            : c === '/' || c === '#'
              ? 'a comment (JSON has none)'
              : c === '"'
                ? 'a string not closed on its line, or holding a raw tab or newline (write \\t, \\n)'
                : /[-+.\d]/.test(c)
                  ? `${JSON.stringify(c)}, a number JSON does not write (no leading zero, "+", or "." without digits on both sides)`
                  : JSON.stringify(c)
    const column = i - text.lastIndexOf('\n', i - 1)
    return `line ${lineAt(text, i)}, column ${column}: not JSON: expected ${expected}, got ${got}; a .json file is read as JSON (for comments, unquoted keys and the like, name it .yaml)`
  }
}

/**
 * Parse text (YAML is a superset of JSON, so one parser serves both). `source` is the file's path:
 * a .json file must be JSON, not any YAML — a trailing comma, a comment or a single-quoted string
 * was accepted as valid, and the jq or JSON Schema check in CI that reads the same file failed.
 */
export function parseConfigText(text: string, source = 'config', env: NodeJS.ProcessEnv = process.env): unknown {
  const mark = markChar(text)
  if (mark === undefined) throw new ConfigError(source, ['(root): the document holds every character from U+E000 to U+F8FF; igw cannot read ${…} references in it'])
  const marked = markEnvRefs(text, env, mark)
  if (extname(source).toLowerCase() === '.json' && marked.text.trim() !== '') {
    const problem = jsonSyntaxProblem(marked.text, mark)
    if (problem !== undefined) throw new ConfigError(source, [problem])
  }
  const doc = parseDocument(marked.text, { prettyErrors: true, uniqueKeys: false, merge: true })
  const duplicates = duplicateKeyOffsets(doc)
  if (doc.errors.length || duplicates.length) {
    const errors = doc.errors.map((e) => {
      const pos = e.linePos?.[0]
      // prettyErrors appends " at line L, column C:" and a source excerpt; the prefix says it once
      // The library's own advice ("please use YAML.parseAllDocuments()") is for its callers, not
      // for whoever wrote the file.
      const msg =
        e.code === 'MULTIPLE_DOCS'
          ? 'a second YAML document starts here (after "---"); a config file holds one document'
          : e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')
      return { at: e.pos[0], line: `${pos ? `line ${pos.line}, column ${pos.col}: ` : ''}${msg}` }
    })
    for (const at of duplicates) {
      const col = at - marked.text.lastIndexOf('\n', at - 1)
      errors.push({ at, line: `line ${lineAt(marked.text, at)}, column ${col}: Map keys must be unique` })
    }
    throw new ConfigError(source, errors.sort((a, b) => a.at - b.at).map((e) => e.line))
  }
  // A local tag (`!name`) is only a warning to the parser, and the value stays plain text:
  // `secret: !ENV JWT_SECRET` (mkdocs, pyyaml-env-tag) made the secret the words "JWT_SECRET".
  // One on a value holding a ${…} reference (`!ENV ${JWT_SECRET}`) still reads the variable.
  // Of YAML's own tags only those of JSON's values: `!!binary` made a secret a byte array ("a map
  // (not shown)"), `!!omap`/`!!set` a Map/Set that zod saw as an empty object ("tenants: expected
  // record, got {}"), and a tag YAML does not know (`!<tag:…>`, `!!python/…`) or cannot apply
  // (`!!float 1`, `!!int abc`) left the value the text as written.
  const unknownTags: string[] = []
  visit(doc, {
    Node(_key, node) {
      if (typeof node.tag !== 'string') return
      if (isScalar(node) && typeof node.value === 'string' && node.value.includes(marked.mark)) return
      const at = node.range?.[0]
      const line = at === undefined ? '' : `line ${lineAt(marked.text, at)}: `
      const tag = node.tag.startsWith(YAML_TAG) ? `!!${node.tag.slice(YAML_TAG.length)}` : node.tag.startsWith('!') ? node.tag : `!<${node.tag}>`
      if (node.tag.startsWith('!')) unknownTags.push(`${line}igw does not read the tag ${tag} (the value after it would be taken as it is written); for an environment variable write \${NAME}`)
      else if (!JSON_TAGS.has(tag)) unknownTags.push(`${line}igw does not read the tag ${tag}: a config holds maps, lists, strings, numbers, booleans and null`)
      else if (isScalar(node) && typeof node.value === 'string' && tag !== '!!str') unknownTags.push(`${line}${JSON.stringify(node.source ?? node.value)} is not a ${tag}`)
    },
  })
  if (unknownTags.length) throw new ConfigError(source, unknownTags)
  // Nothing but blanks, comments and a "---" (a file truncated, or its ConfigMap key empty): said
  // as such, not as "routes: required" of a document nobody wrote.
  const top = doc.contents
  if (top === null || (isScalar(top) && top.type === 'PLAIN' && top.source === '' && top.tag === undefined)) throw new ConfigError(source, ['(root): the file is empty (no settings, only blank lines or comments)'])
  const substitutedKeys = new Set<Scalar>()
  if (marked.refs.length) {
    const problems = substituteRefs(doc, marked, substitutedKeys)
    if (problems.length) throw new ConfigError(source, problems)
  }
  keysAsWritten(doc)
  const repeated = keyProblems(doc, substitutedKeys, (offset) => lineAt(marked.text, offset))
  if (repeated.length) throw new ConfigError(source, repeated)
  const aliases = aliasProblems(doc, (offset) => lineAt(marked.text, offset))
  if (aliases.length) throw new ConfigError(source, aliases)
  try {
    return doc.toJS({ maxAliasCount: -1 }) ?? {}
  } catch (err) {
    // toJS throws on a bad merge key or an unresolved alias: the document's fault, so a config
    // error (exit 78), never a stack trace.
    throw new ConfigError(source, [`(root): ${(err as Error).message}`])
  }
}

export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): { config: GatewayConfig; raw: unknown } {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError(path, [`cannot read file: ${(err as Error).message}`])
  }
  if (!['.yaml', '.yml', '.json', ''].includes(extname(path).toLowerCase())) {
    throw new ConfigError(path, ['expected a .yaml, .yml or .json file'])
  }
  const raw = parseConfigText(text, path, env)
  return { config: validateConfig(raw, path), raw }
}
