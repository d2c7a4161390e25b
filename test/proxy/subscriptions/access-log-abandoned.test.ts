// An operation a client abandoned over a terminated WebSocket (its socket closed while a query
// waited for its result) is logged as 499 whatever log.access.sampleRate says, as on the HTTP path
// ("5xx and aborts always logged"): it was sampled like a success, so at a low rate the access
// log had no trace of clients walking away from slow operations. Real WorkerProxy; the backend is
// a real ws server speaking graphql-transport-ws that acknowledges and never answers.
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { validateConfig } from '../../../config/load.ts'
import { filterModules, type FilterModules } from '../../../filters/registry.ts'
import { ProxyMetrics } from '../../../proxy/metrics.ts'
import { WorkerProxy } from '../../../proxy/worker-proxy.ts'
import { LogCapture } from '../../helpers/proxy.ts'
import { RawClient } from './clients.ts'

describe('access log of an abandoned socket operation', () => {
  let backend: WebSocketServer
  let proxy: WorkerProxy
  let logs: LogCapture
  let url: string
  const subscribed: string[] = []
  beforeAll(async () => {
    backend = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'graphql-transport-ws' })
    backend.on('connection', (ws) =>
      ws.on('message', (d) => {
        const m = JSON.parse(d.toString()) as { type: string; id?: string }
        if (m.type === 'connection_init') ws.send(JSON.stringify({ type: 'connection_ack' }))
        if (m.type === 'subscribe') subscribed.push(m.id!) // and never answered
      }),
    )
    await new Promise((r) => backend.once('listening', r))
    const up = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`
    const config = validateConfig({ log: { level: 'info', access: { sampleRate: 0 } }, subscriptions: { upstream: { lingerMs: 0 } }, routes: [{ name: 'gql', upstream: up, websocket: { mode: 'terminate' } }] } as never)
    logs = new LogCapture()
    proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: filterModules as FilterModules }, config)
    await proxy.apply(1, config)
    await proxy.listen('127.0.0.1', 0)
    url = `ws://127.0.0.1:${(proxy.server.address() as AddressInfo).port}/graphql`
  })
  afterAll(async () => {
    await proxy?.drain(500)
    for (const c of backend?.clients ?? []) c.terminate()
    await new Promise((r) => backend?.close(r))
  })

  it('is logged at sampleRate 0 with status 499', async () => {
    const c = await RawClient.open(url, ['graphql-transport-ws'])
    c.send({ type: 'connection_init' })
    await c.wait((x) => x.messages.some((m) => m.type === 'connection_ack'), 5_000, 'ack')
    c.send({ type: 'subscribe', id: 'slow', payload: { query: 'query Slow { ok }' } })
    await expect.poll(() => subscribed.length, { timeout: 5_000 }).toBe(1)
    c.end()
    await expect.poll(() => logs.find('access').filter((l) => l.method === 'WS').length, { timeout: 5_000 }).toBe(1)
    expect(logs.find('access').find((l) => l.method === 'WS')).toMatchObject({ route: 'gql', opId: 'slow', op: 'Slow', status: 499, outcome: 'closed' })
  })
})
