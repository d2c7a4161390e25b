// Topic `filter`: an upstream event that is only errors (`data` null or absent, or its root field
// null because its resolver failed) has nothing for a filter to match, and was withheld from every
// filtered client: they never heard of upstream errors at all, while unfiltered clients did. It
// is delivered to them; events with data are still filtered as before.
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer, type WebSocket } from 'ws'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'
import { RawClient, waitUntil } from './subscriptions/clients.ts'

describe('topic filters and events that carry only errors', () => {
  const subs: { ws: WebSocket; id: string }[] = []
  const sockets = new Set<WebSocket>()
  let wss: WebSocketServer
  let proxy: TestProxy

  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    wss.on('connection', (ws) => {
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('error', () => undefined)
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string }
        if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}')
        else if (m.type === 'subscribe') subs.push({ ws, id: m.id! })
      })
    })
    await once(wss, 'listening')
    proxy = await startTestProxy({
      subscriptions: { upstream: { lingerMs: 0 }, topics: { changed: { query: 'subscription { changed { id } }', clientVariables: [] } } },
      routes: [{ name: 'gql', upstream: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, websocket: { mode: 'terminate' } }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    for (const ws of sockets) ws.terminate()
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()))
  })

  it('a filtered client gets the error-only events and only its matching data events', async () => {
    const url = `ws://127.0.0.1:${proxy.port}/graphql`
    const filtered = await RawClient.open(url)
    const all = await RawClient.open(url)
    try {
      filtered.send({ op: 'subscribe', id: 'f', topic: 'changed', filter: { id: '7' } })
      all.send({ op: 'subscribe', id: 'a', topic: 'changed' })
      await filtered.wait((c) => c.messages.some((m) => m.op === 'subscribed'))
      await all.wait((c) => c.messages.some((m) => m.op === 'subscribed'))
      await waitUntil(() => subs.length === 1, 5_000, 'the shared upstream subscribe')
      const { ws, id } = subs[0]!
      const boom = (n: number) => [{ message: `boom ${n}`, path: ['changed'] }]
      const events: unknown[] = [
        { data: { changed: { id: '7' } } },
        { data: { changed: { id: '8' } } },
        { data: null, errors: boom(1) },
        { errors: boom(2) },
        { data: { changed: null }, errors: boom(3) },
        // errors beside data that does not match: still filtered
        { data: { changed: { id: '9' } }, errors: boom(4) },
        // the last one: the filtered client got everything it is going to once it has this
        { data: { changed: { id: '7', last: true } } },
      ]
      for (const payload of events) ws.send(JSON.stringify({ id, type: 'next', payload }))
      await all.wait((c) => c.of((m) => m.op === 'event').length === events.length, 5_000, 'every event to the unfiltered client')
      await filtered.wait((c) => c.of((m) => m.op === 'event' && JSON.stringify(m.payload).includes('"last":true')).length === 1, 5_000, 'the filtered client\'s last event')
      const got = filtered.of((m) => m.op === 'event').map((m) => {
        const p = m.payload as { data?: unknown; errors?: { message: string }[] }
        return p.errors?.map((e) => e.message).join() ?? (p.data as { changed: { id: string } }).changed.id
      })
      expect(got).toEqual(['7', 'boom 1', 'boom 2', 'boom 3', '7'])
      expect(filtered.of((m) => m.op === 'error')).toEqual([])
    } finally {
      filtered.end()
      all.end()
    }
  })
})
