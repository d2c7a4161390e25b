// The three client protocols the hub terminates, reduced to one set of commands in and one
// set of messages out:
//  - graphql-transport-ws (the `graphql-ws` library),
//  - graphql-ws, the legacy subscriptions-transport-ws protocol (Apollo's old SubscriptionClient),
//  - igw-topics, the seed's topic protocol ({"op":"subscribe","topic":…,"cursor":…,"filter":…}),
//    used when the client offers no subprotocol (or offers "igw-topics").
// Pure: parse text → command, build text; the connection does the I/O.

import { jsonDepthExceeds, MAX_JSON_DEPTH } from '../../config/json-depth.ts'
import { hasInexactNumber, keepInexactDigits } from '../../config/json-numbers.ts'

export const TRANSPORT_WS = 'graphql-transport-ws'
export const LEGACY_WS = 'graphql-ws'
export const TOPICS = 'igw-topics'
export type ProtocolName = typeof TRANSPORT_WS | typeof LEGACY_WS | typeof TOPICS

/** Pick the protocol from the offered subprotocols; undefined = none we speak. */
export function chooseProtocol(offered: readonly string[]): ProtocolName | undefined {
  if (offered.length === 0) return TOPICS
  if (offered.includes(TRANSPORT_WS)) return TRANSPORT_WS
  if (offered.includes(LEGACY_WS)) return LEGACY_WS
  if (offered.includes(TOPICS)) return TOPICS
  return undefined
}

export type GapReason = 'trimmed' | 'expired' | 'epoch' | 'invalid' | 'dropped'

export interface GapNotice {
  reason: GapReason
  /** The position the client had (null when it had none or it was not valid). */
  from: string | null
  /** The position delivery continues after. */
  to: string | null
  /** Events missed, when known. */
  missed?: number
}

export interface SubscribeCommand {
  t: 'subscribe'
  id: string
  query: string | undefined
  operationName: string | undefined
  variables: Record<string, unknown> | undefined
  /** Extensions without the cursor. */
  extensions: Record<string, unknown> | undefined
  cursor: string | undefined
  topic: string | undefined
  filter: unknown
  /**
   * Only when `variables` or `extensions` hold a number JSON.parse did not keep (an integer
   * beyond ±(2^53 − 1): 9007199254740993 reads as …992; or a non-finite one: 1e400): the same
   * two read again from the message text with those numbers as JSON.rawJSON of the client's
   * digits. What goes upstream and the dedup key are built from these (JSON.stringify and
   * canonicalJson write the digits back); filters see the parsed values.
   */
  exact?: { variables: Record<string, unknown> | undefined; extensions: Record<string, unknown> | undefined }
}

export type ClientCommand =
  | { t: 'init'; payload: Record<string, unknown> | undefined }
  | SubscribeCommand
  | { t: 'stop'; id: string }
  | { t: 'replay'; id: string; cursor: string }
  | { t: 'ping'; payload: unknown }
  | { t: 'pong' }
  | { t: 'terminate' }
  /** Malformed: `id` when the message named one. */
  | { t: 'bad'; reason: string; id?: string }

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function optObject(v: unknown): Record<string, unknown> | undefined | false {
  if (v === undefined || v === null) return undefined
  return isObject(v) ? v : false
}

function optString(v: unknown): string | undefined | false {
  if (v === undefined || v === null) return undefined
  return typeof v === 'string' ? v : false
}

const MAX_ID = 128

function validId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_ID
}

/** The GraphQL part of subscribe/start payloads. */
function graphqlSubscribe(id: string, payload: unknown): SubscribeCommand | { t: 'bad'; reason: string; id: string } {
  if (!isObject(payload)) return { t: 'bad', reason: 'subscribe payload must be an object', id }
  const query = optString(payload.query)
  const operationName = optString(payload.operationName)
  const variables = optObject(payload.variables)
  const extensions = optObject(payload.extensions)
  if (query === false) return { t: 'bad', reason: '"query" must be a string', id }
  if (operationName === false) return { t: 'bad', reason: '"operationName" must be a string', id }
  if (variables === false) return { t: 'bad', reason: '"variables" must be an object', id }
  if (extensions === false) return { t: 'bad', reason: '"extensions" must be an object', id }
  let cursor: string | undefined
  if (extensions !== undefined && 'cursor' in extensions) {
    const c = extensions.cursor
    if (c !== undefined && c !== null && typeof c !== 'string') return { t: 'bad', reason: '"extensions.cursor" must be a string', id }
    cursor = (c as string | null | undefined) ?? undefined
  }
  return { t: 'subscribe', id, query, operationName, variables, extensions: withoutCursor(extensions), cursor, topic: undefined, filter: undefined }
}

/** Extensions without the cursor (undefined when nothing else is left). */
function withoutCursor(ext: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (ext === undefined || !('cursor' in ext)) return ext
  const { cursor: _c, ...rest } = ext
  return Object.keys(rest).length ? rest : undefined
}

/**
 * A subscribe whose variables, extensions or topic filter (or a connection_init payload that)
 * hold a number JSON.parse rounded or made infinite: read the message again keeping the client's
 * digits (JSON.rawJSON), so the backend gets what the client sent, and two ids beyond 2^53 never
 * share a stream, an upstream connection or a filter match. Rare: the reviver runs only then,
 * never on the hot path.
 */
function keepClientDigits(protocol: ProtocolName, text: string, cmd: ClientCommand): ClientCommand {
  switch (cmd.t) {
    case 'subscribe':
      if (!hasInexactNumber(cmd.variables) && !hasInexactNumber(cmd.extensions) && !hasInexactNumber(cmd.filter)) return cmd
      break
    case 'init':
      if (!hasInexactNumber(cmd.payload)) return cmd
      break
    default:
      return cmd
  }
  let again: Record<string, unknown>
  try {
    again = JSON.parse(text, keepInexactDigits) as Record<string, unknown>
  } catch {
    return cmd // it parsed a moment ago
  }
  if (cmd.t === 'init') return { t: 'init', payload: again.payload as Record<string, unknown> }
  // The same shape was validated on the first read: objects (or absent) in the same places.
  const body = (protocol === TOPICS ? again : again.payload) as Record<string, unknown>
  const variables = (body.variables ?? undefined) as Record<string, unknown> | undefined
  const extensions = withoutCursor((body.extensions ?? undefined) as Record<string, unknown> | undefined)
  // The topic filter is the gateway's own: it takes the digits directly (event-filter.ts).
  if (protocol === TOPICS) return { ...cmd, filter: body.filter, exact: { variables, extensions: undefined } }
  return { ...cmd, exact: { variables, extensions } }
}

export function parseClientMessage(protocol: ProtocolName, text: string): ClientCommand {
  let msg: unknown
  try {
    msg = JSON.parse(text)
  } catch {
    return { t: 'bad', reason: 'message is not JSON' }
  }
  // Deeper JSON would overflow the stack wherever it is walked later (a pong echoing the payload,
  // the variables sent upstream, dedup keys). The GraphQL protocols wrap the request in
  // "payload": one level more, so a request takes the same depth as an HTTP body.
  if (jsonDepthExceeds(msg, protocol === TOPICS ? MAX_JSON_DEPTH : MAX_JSON_DEPTH + 1)) {
    const id = isObject(msg) && validId(msg.id) ? msg.id : undefined
    return { t: 'bad', reason: `message nested deeper than ${MAX_JSON_DEPTH} levels`, id }
  }
  if (!isObject(msg)) return { t: 'bad', reason: 'message must be a JSON object' }
  return keepClientDigits(protocol, text, protocol === TOPICS ? parseTopic(msg) : parseGraphql(protocol, msg))
}

function parseGraphql(protocol: ProtocolName, msg: Record<string, unknown>): ClientCommand {
  const type = msg.type
  switch (type) {
    case 'connection_init': {
      const payload = optObject(msg.payload)
      if (payload === false) return { t: 'bad', reason: 'connection_init payload must be an object' }
      return { t: 'init', payload }
    }
    case 'subscribe':
    case 'start': {
      if ((type === 'subscribe') !== (protocol === TRANSPORT_WS)) return { t: 'bad', reason: `"${type}" is not a ${protocol} message` }
      if (!validId(msg.id)) return { t: 'bad', reason: `"id" must be a non-empty string of at most ${MAX_ID} characters` }
      return graphqlSubscribe(msg.id, msg.payload)
    }
    case 'complete':
    case 'stop': {
      if ((type === 'complete') !== (protocol === TRANSPORT_WS)) return { t: 'bad', reason: `"${type}" is not a ${protocol} message` }
      if (!validId(msg.id)) return { t: 'bad', reason: '"id" must be a non-empty string' }
      return { t: 'stop', id: msg.id }
    }
    case 'ping':
    case 'pong': {
      if (protocol !== TRANSPORT_WS) return { t: 'bad', reason: `"${type}" is not a graphql-ws message` }
      // PROTOCOL.md: the payload is an object, or null/absent (graphql-ws's server closes with
      // 4400 on anything else, and its client would take an echoed string as a bad response).
      const payload = optObject(msg.payload)
      if (payload === false) return { t: 'bad', reason: `"${type}" payload must be an object` }
      return type === 'ping' ? { t: 'ping', payload } : { t: 'pong' }
    }
    case 'connection_terminate':
      return protocol === LEGACY_WS ? { t: 'terminate' } : { t: 'bad', reason: '"connection_terminate" is not a graphql-transport-ws message' }
    default:
      return { t: 'bad', reason: `unknown message type ${JSON.stringify(type)?.slice(0, 40) ?? 'undefined'}` }
  }
}

function parseTopic(msg: Record<string, unknown>): ClientCommand {
  const op = msg.op
  switch (op) {
    case 'init': {
      const payload = optObject(msg.payload)
      if (payload === false) return { t: 'bad', reason: '"payload" must be an object' }
      return { t: 'init', payload }
    }
    case 'subscribe': {
      if (typeof msg.topic !== 'string' || msg.topic === '') return { t: 'bad', reason: '"topic" must be a non-empty string' }
      const id = msg.id === undefined ? msg.topic : msg.id
      if (!validId(id)) return { t: 'bad', reason: `"id" must be a non-empty string of at most ${MAX_ID} characters` }
      const cursor = optString(msg.cursor)
      if (cursor === false) return { t: 'bad', reason: '"cursor" must be a string', id }
      const variables = optObject(msg.variables)
      if (variables === false) return { t: 'bad', reason: '"variables" must be an object', id }
      return { t: 'subscribe', id, query: undefined, operationName: undefined, variables, extensions: undefined, cursor, topic: msg.topic, filter: msg.filter }
    }
    case 'unsubscribe':
    case 'replay': {
      // The id defaults to the topic name here too: a client that subscribed with just a topic
      // (its id is the topic) names it the same way to end or replay it.
      const id = msg.id === undefined && typeof msg.topic === 'string' ? msg.topic : msg.id
      if (!validId(id)) return { t: 'bad', reason: '"id" (or "topic") must be a non-empty string' }
      if (op === 'unsubscribe') return { t: 'stop', id }
      if (typeof msg.cursor !== 'string') return { t: 'bad', reason: '"cursor" must be a string', id }
      return { t: 'replay', id, cursor: msg.cursor }
    }
    case 'ping':
      return { t: 'ping', payload: undefined }
    default:
      return { t: 'bad', reason: `unknown op ${JSON.stringify(op)?.slice(0, 40) ?? 'undefined'}` }
  }
}

/** A GraphQL error as clients parse it: an object with a string `message`, `extensions` (if any) an object. */
function isGraphQLError(e: unknown): boolean {
  return isObject(e) && typeof e.message === 'string' && (e.extensions === undefined || isObject(e.extensions))
}

/**
 * An `errors` list as the client protocols can carry it. graphql-ws clients check every entry of
 * an `error` message and close the whole socket (4004) on one without a `message` — every other
 * subscription on it dies with the one being refused. Entries a filter or an upstream got wrong
 * are replaced: a string becomes the message, anything else gets `fallback.message`; the entry's
 * `extensions` object is kept, or becomes `{code: fallback.code}`. `malformed` counts what was
 * replaced (0: the list is returned as it came, no copy).
 */
export function graphqlErrors(list: readonly unknown[], fallback: { message: string; code: string }): { errors: unknown[]; malformed: number } {
  let malformed = 0
  for (const e of list) if (!isGraphQLError(e)) malformed++
  if (malformed === 0 && list.length > 0) return { errors: list as unknown[], malformed }
  if (list.length === 0) return { errors: [{ message: fallback.message, extensions: { code: fallback.code } }], malformed: 1 }
  const errors = list.map((e) => {
    if (isGraphQLError(e)) return e
    const o = isObject(e) ? e : undefined
    const message = typeof e === 'string' ? e : typeof o?.message === 'string' ? o.message : fallback.message
    const extensions = isObject(o?.extensions) ? o.extensions : { code: fallback.code }
    return { ...o, message, extensions }
  })
  return { errors, malformed }
}

const GAP_MESSAGES: Record<GapReason, string> = {
  trimmed: 'events after your cursor were trimmed from the replay log; refetch to catch up',
  expired: 'events after your cursor expired from the replay log; refetch to catch up',
  epoch: 'the stream restarted (new epoch); events in between may be missing; refetch to catch up',
  invalid: 'the cursor is not valid for this subscription; delivery continues from now',
  dropped: 'events were dropped because this connection did not keep up; replay from gap.from or refetch',
}

export function gapMessage(reason: GapReason): string {
  return GAP_MESSAGES[reason]
}

/**
 * The legacy protocol's `error` payload: an object, as subscriptions-transport-ws's server sends
 * (`{message}`) and Apollo Kotlin / Apollo Android read it (a Map: a list threw there) — the first
 * error's fields, with the whole list under `errors`, which Apollo's JS SubscriptionClient reads
 * ahead of `message`.
 */
function legacyErrorPayload(errors: readonly unknown[]): Record<string, unknown> {
  const first = errors[0]
  return { ...(isObject(first) ? first : {}), errors }
}

/** Builds the server's messages for one protocol. Strings, ready for ws.send. */
export class ProtocolWriter {
  readonly name: ProtocolName
  readonly #graphql: boolean

  constructor(name: ProtocolName) {
    this.name = name
    this.#graphql = name !== TOPICS
  }

  /** Head of an event message for one subscription; the event's shared tail completes it. */
  nextPrefix(id: string, topic: string | undefined): string {
    const jid = JSON.stringify(id)
    if (this.name === TRANSPORT_WS) return `{"id":${jid},"type":"next"`
    if (this.name === LEGACY_WS) return `{"id":${jid},"type":"data"`
    return `{"op":"event","id":${jid},"topic":${JSON.stringify(topic ?? '')}`
  }

  /** A single result (query/mutation over the socket, or a subscribe a filter answered). */
  result(id: string, payloadJson: string, topic: string | undefined): string {
    return `${this.nextPrefix(id, topic)},"payload":${payloadJson}}`
  }

  error(id: string, errors: readonly unknown[]): string {
    if (this.name === LEGACY_WS) return JSON.stringify({ id, type: 'error', payload: legacyErrorPayload(errors) })
    if (this.#graphql) return JSON.stringify({ id, type: 'error', payload: errors })
    return JSON.stringify({ op: 'error', id, errors })
  }

  complete(id: string): string {
    return this.#graphql ? JSON.stringify({ id, type: 'complete' }) : JSON.stringify({ op: 'complete', id })
  }

  gap(id: string, gap: GapNotice): string {
    if (this.#graphql) {
      const payload = { errors: [{ message: gapMessage(gap.reason), extensions: { code: 'STREAM_GAP', gap } }], extensions: { gap, cursor: gap.to } }
      return JSON.stringify({ id, type: this.name === TRANSPORT_WS ? 'next' : 'data', payload })
    }
    return JSON.stringify({ op: 'gap', id, gap, cursor: gap.to, message: gapMessage(gap.reason) })
  }

  ack(): string {
    return this.#graphql ? '{"type":"connection_ack"}' : '{"op":"init_ack"}'
  }

  /** Legacy protocol keep-alive; other protocols use WebSocket pings. */
  keepAlive(): string | undefined {
    return this.name === LEGACY_WS ? '{"type":"ka"}' : undefined
  }

  pong(payload: unknown): string {
    if (this.name === TOPICS) return '{"op":"pong"}'
    return payload === undefined ? '{"type":"pong"}' : JSON.stringify({ type: 'pong', payload })
  }

  /** Topic protocol: the subscription is live; `cursor` is where it stands. */
  subscribed(id: string, topic: string, cursor: string | null): string | undefined {
    return this.#graphql ? undefined : JSON.stringify({ op: 'subscribed', id, topic, cursor })
  }

  /** A protocol error that does not close the connection (legacy and topics). */
  badMessage(reason: string, id: string | undefined): string {
    if (this.name === LEGACY_WS) return JSON.stringify(id === undefined ? { type: 'connection_error', payload: { message: reason } } : { id, type: 'error', payload: legacyErrorPayload([{ message: reason, extensions: { code: 'BAD_REQUEST' } }]) })
    return JSON.stringify({ op: 'error', id, errors: [{ message: reason, extensions: { code: 'BAD_REQUEST' } }] })
  }
}

/** graphql-transport-ws close codes (the graphql-ws library's). */
export const CLOSE = {
  badRequest: 4400,
  unauthorized: 4401,
  initTimeout: 4408,
  subscriberExists: 4409,
  tooManyInits: 4429,
  goingAway: 1001,
  tryAgainLater: 1013,
  internalError: 1011,
} as const
