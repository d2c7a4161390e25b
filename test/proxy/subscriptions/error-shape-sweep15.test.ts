// A filter (or the upstream) may answer a subscribe with an `errors` list that is not a list of
// GraphQL errors (`["x"]`, `[{}]`, `[{"message":5}]`, `[null]`). graphql-ws clients validate the
// `error` message's payload and close the whole socket with 4004 on a bad one, killing every
// other subscription multiplexed on it. The hub must hand the client GraphQL errors only: the
// refused operation gets an error, the others keep flowing. Real WorkerProxy, real hub, real
// graphql-yoga backend and real graphql-ws / ws clients; the filter is substituted for a registry
// name, as in subscription-event-phase.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { filterModules, type FilterModules } from '../../../filters/registry.ts'
import type { Filter, RequestContext } from '../../../proxy/filter.ts'
import type { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, RawClient, waitUntil } from './clients.ts'
import { startWorkerProxy } from '../../helpers/proxy.ts'

/** The legacy protocol's error payload: the error's own fields, the whole list under `errors` (an object, as Apollo Kotlin reads it). */
const legacyPayload = (e: Record<string, unknown>) => ({ ...e, errors: [e] })

/** Bodies the substituted filter answers with, by the subscribe's operation name. */
const BODIES: Record<string, string> = {
  Str: JSON.stringify({ errors: ['x'] }),
  Empty: JSON.stringify({ errors: [{}] }),
  NumMsg: JSON.stringify({ errors: [{ message: 5, extensions: { code: 'FORBIDDEN' } }] }),
  Null: JSON.stringify({ errors: [null] }),
  BadExt: JSON.stringify({ errors: [{ message: 'no', extensions: 'nope' }] }),
  Good: JSON.stringify({ errors: [{ message: 'not for you', extensions: { code: 'FORBIDDEN' } }] }),
}

describe('subscription errors the client can parse (sweep 15)', () => {
  let be: SubscriptionBackend
  let proxy: WorkerProxy
  let url: string

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    const refuser: Filter = {
      name: 'refuser',
      onRequest(ctx: RequestContext) {
        const name = /^subscription (\w+)/.exec(ctx.graphql?.query ?? '')?.[1]
        if (ctx.subscription === undefined || name === undefined || !Object.hasOwn(BODIES, name)) return undefined
        return { status: 403, headers: { 'content-type': 'application/json' }, body: BODIES[name]!, code: 'FORBIDDEN' }
      },
    }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => refuser } }
    const config = validateConfig({
      log: { level: 'silent' },
      routes: [{ name: 'subs', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }],
    })
    ;({ proxy, url } = await startWorkerProxy(config, modules))
  })
  afterAll(async () => {
    await proxy?.drain(500)
    await be?.close()
  })

  it('a filter refusing with malformed errors costs that operation only; the socket and its other subscriptions stay', async () => {
    const c = new GqlClient(url)
    try {
      const live = c.subscribe(EVENTS('keep'))
      await waitUntil(() => be.subscribes.some((s) => s.channel === 'keep'), 5_000, 'backend subscribe')
      be.publish('keep')
      await live.received.wait((r) => r.seqs.length === 1)
      const refused: Record<string, ReturnType<GqlClient['subscribe']>> = {}
      for (const name of Object.keys(BODIES)) refused[name] = c.subscribe(`subscription ${name} { events(channel: "${name}") { seq } }`)
      await waitUntil(() => Object.values(refused).every((r) => r.received.error !== undefined) || c.closed !== undefined, 5_000, 'every refusal')
      expect(c.closed).toBeUndefined()
      for (const [name, r] of Object.entries(refused)) {
        const errors = r.received.error as { message: unknown; extensions?: unknown }[]
        expect(Array.isArray(errors), name).toBe(true)
        expect(errors.length, name).toBeGreaterThan(0)
        for (const e of errors) {
          expect(typeof e.message, name).toBe('string')
          if (e.extensions !== undefined) expect(typeof e.extensions === 'object' && e.extensions !== null && !Array.isArray(e.extensions), name).toBe(true)
        }
      }
      // Well-formed errors pass as the filter wrote them; a string entry becomes its message.
      expect(refused.Good!.received.error).toEqual([{ message: 'not for you', extensions: { code: 'FORBIDDEN' } }])
      expect((refused.Str!.received.error as { message: string }[])[0]!.message).toBe('x')
      expect((refused.Empty!.received.error as { extensions: { code: string } }[])[0]!.extensions.code).toBe('FORBIDDEN')
      // The live subscription on the same socket still gets events.
      be.publish('keep')
      await live.received.wait((r) => r.seqs.length === 2)
      expect(c.closed).toBeUndefined()
      const text = await proxy.metrics.registry.getSingleMetricAsString('igw_filter_errors_total')
      expect(text).toMatch(/igw_filter_errors_total\{filter="refuser"\} 5/)
    } finally {
      await c.dispose()
    }
  })

  it('legacy graphql-ws and topic clients get GraphQL errors too', async () => {
    const legacy = await RawClient.open(url, ['graphql-ws'])
    try {
      legacy.send({ type: 'connection_init', payload: {} })
      await legacy.wait((c) => c.messages.some((m) => m.type === 'connection_ack'))
      legacy.send({ id: '1', type: 'start', payload: { query: 'subscription Str { events(channel: "a") { seq } }' } })
      await legacy.wait((c) => c.messages.some((m) => m.type === 'error' && m.id === '1'))
      const err = legacy.messages.find((m) => m.type === 'error' && m.id === '1')!
      expect(err.payload).toEqual(legacyPayload({ message: 'x', extensions: { code: 'FORBIDDEN' } }))
    } finally {
      legacy.end()
    }
  })
})

describe('topic unsubscribe while the subscribe is still being admitted (sweep 15)', () => {
  let be: SubscriptionBackend
  let proxy: WorkerProxy
  let url: string
  let release: (() => void) | undefined

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    // Holds every topic subscribe until the test releases it (a slow tenant/quota filter).
    const slow: Filter = {
      name: 'slow',
      onRequest(ctx: RequestContext) {
        if (ctx.subscription?.topic === undefined || ctx.subscription.id !== 'held') return undefined
        return new Promise<undefined>((resolve) => (release = () => resolve(undefined)))
      },
    }
    const modules: FilterModules = { ...filterModules, 'request-id': { create: () => slow } }
    const config = validateConfig({
      log: { level: 'silent' },
      subscriptions: { topics: { ev: { query: 'subscription { events(channel: "ev") { seq } }' } } },
      routes: [{ name: 'subs', upstream: be.url, websocket: { mode: 'terminate' }, filters: [{ name: 'request-id' }] }],
    })
    ;({ proxy, url } = await startWorkerProxy(config, modules))
  })
  afterAll(async () => {
    release?.()
    await proxy?.drain(500)
    await be?.close()
  })

  it('answers complete at once, and the admission ending later sends nothing for that id', async () => {
    const c = await RawClient.open(url)
    try {
      c.send({ op: 'subscribe', id: 'held', topic: 'ev' })
      await waitUntil(() => release !== undefined, 5_000, 'the subscribe to reach the slow filter')
      c.send({ op: 'unsubscribe', id: 'held' })
      await c.wait((x) => x.of((m) => m.op === 'complete' && m.id === 'held').length === 1, 5_000, 'complete for the held id')
      release!()
      // A second subscription on the connection shows the first admission has ended meanwhile.
      c.send({ op: 'subscribe', id: 'other', topic: 'ev' })
      await c.wait((x) => x.of((m) => m.op === 'subscribed' && m.id === 'other').length === 1)
      await waitUntil(() => be.subscribes.some((x) => x.channel === 'ev'), 5_000, 'backend subscribe')
      be.publish('ev')
      await c.wait((x) => x.of((m) => m.op === 'event' && m.id === 'other').length === 1)
      expect(c.of((m) => m.id === 'held').map((m) => m.op)).toEqual(['complete'])
      expect(c.close).toBeUndefined()
    } finally {
      c.end()
    }
  })
})
