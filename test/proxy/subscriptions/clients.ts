// Test clients for the subscription hub: the real graphql-ws client, and raw `ws` for the legacy
// graphql-ws protocol and the topic protocol. Each collects what it receives so a test can wait
// for a condition and then assert on the whole sequence.
import { once } from 'node:events'
import { createClient, type Client } from 'graphql-ws'
import WebSocket from 'ws'
import type { QueuedEntry } from '../../../proxy/subscriptions/delivery-queue.ts'
import type { ReplayFeed } from '../../../proxy/subscriptions/replay-feed.ts'
import { waitUntil as waitFor } from '../../helpers/wait.ts'

/** The shared poller (conditions may be async); 5 s unless told. */
export const waitUntil = (cond: () => boolean | Promise<boolean>, ms = 5_000, what = 'condition'): Promise<void> => waitFor(cond, ms, what)

export interface NextPayload {
  data?: { events?: { seq: number; tenant: string | null; note: string | null; blob?: string | null } } & Record<string, unknown>
  errors?: { message: string; extensions?: { code?: string } }[]
  extensions?: { cursor?: string; gap?: { reason: string; from: string | null; to: string | null; missed?: number } }
}

/** One graphql-ws subscription's received payloads, plus how it ended. */
export class Received {
  readonly payloads: NextPayload[] = []
  error: unknown = undefined
  completed = false
  get events(): NextPayload[] {
    return this.payloads.filter((p) => p.data?.events !== undefined)
  }
  get seqs(): number[] {
    return this.events.map((p) => p.data!.events!.seq)
  }
  get gaps(): NonNullable<NonNullable<NextPayload['extensions']>['gap']>[] {
    return this.payloads.filter((p) => p.extensions?.gap).map((p) => p.extensions!.gap!)
  }
  get lastCursor(): string | undefined {
    return this.payloads[this.payloads.length - 1]?.extensions?.cursor
  }
  wait(cond: (r: Received) => boolean, ms = 5_000, what = 'payloads'): Promise<void> {
    return waitUntil(() => cond(this), ms, what)
  }
}

export const EVENTS = (channel: string, fields = 'seq tenant note') => `subscription { events(channel: "${channel}") { ${fields} } }`

export class GqlClient {
  readonly client: Client
  closed: { code: number; reason: string } | undefined

  constructor(url: string, params?: Record<string, unknown>, opts: { retry?: boolean } = {}) {
    this.client = createClient({
      url,
      webSocketImpl: WebSocket,
      connectionParams: params,
      retryAttempts: opts.retry ? 10 : 0,
      lazy: true,
      on: { closed: (e) => (this.closed = { code: (e as { code: number }).code, reason: String((e as { reason: unknown }).reason) }) },
    })
  }

  subscribe(query: string, opts: { variables?: Record<string, unknown>; cursor?: string } = {}): { received: Received; stop: () => void } {
    const received = new Received()
    const stop = this.client.subscribe(
      { query, variables: opts.variables, extensions: opts.cursor === undefined ? undefined : { cursor: opts.cursor } },
      {
        next: (v) => void received.payloads.push(v as NextPayload),
        error: (e) => (received.error = e),
        complete: () => (received.completed = true),
      },
    )
    return { received, stop }
  }

  dispose(): Promise<void> {
    return Promise.resolve(this.client.dispose())
  }
}

/** A raw WebSocket that records every JSON message it gets (topic and legacy protocols). */
export class RawClient {
  readonly ws: WebSocket
  readonly messages: Record<string, unknown>[] = []
  close: { code: number; reason: string } | undefined

  private constructor(ws: WebSocket) {
    this.ws = ws
    ws.on('message', (d) => this.messages.push(JSON.parse(d.toString()) as Record<string, unknown>))
    ws.on('close', (code, reason) => (this.close = { code, reason: reason.toString() }))
    ws.on('error', () => undefined)
  }

  static async open(url: string, protocols: string[] = [], headers: Record<string, string> = {}): Promise<RawClient> {
    const ws = new WebSocket(url, protocols, { headers })
    const c = new RawClient(ws)
    await once(ws, 'open')
    return c
  }

  send(msg: unknown): void {
    this.ws.send(JSON.stringify(msg))
  }

  of(pred: (m: Record<string, unknown>) => boolean): Record<string, unknown>[] {
    return this.messages.filter(pred)
  }

  wait(pred: (c: RawClient) => boolean, ms = 5_000, what = 'messages'): Promise<void> {
    return waitUntil(() => pred(this), ms, what)
  }

  async closed(ms = 5_000): Promise<{ code: number; reason: string }> {
    await waitUntil(() => this.close !== undefined, ms, 'close')
    return this.close!
  }

  end(): void {
    this.ws.terminate()
  }
}

/** Topic-protocol events of one subscription id: their seqs. */
export function topicSeqs(c: RawClient, id: string): number[] {
  return c.of((m) => m.op === 'event' && m.id === id).map((m) => ((m.payload as NextPayload).data!.events!.seq))
}

/** Everything a replay feed hands out until it is done (waiting for its Redis pages as a connection does). */
export async function readFeed(feed: ReplayFeed): Promise<QueuedEntry[]> {
  const got: QueuedEntry[] = []
  for (;;) {
    const e = feed.next()
    if (e === undefined) return got
    if (e === null) {
      await new Promise<void>((resolve) => (feed.onReady = resolve))
      continue
    }
    got.push(e)
  }
}
