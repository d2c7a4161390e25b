// The event webhook's URL may carry credentials (`https://user:pass@host/…`: accepted by the
// config, redacted as a secret). undici drops a URL's userinfo, so they were never sent: a
// receiver behind basic auth answered 401 — not retried — and every budget and anomaly event
// was lost. They go out as Basic authorization now; an explicit `authorization` header wins.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Counter, Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { EventSink, type BudgetEvent } from '../../../filters/quota/quota-events.ts'

const servers: Server[] = []
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections()
    await new Promise<void>((r) => s.close(() => r()))
  }
})

/** A receiver behind basic auth: 204 for `expected`, 401 for anything else. */
async function receiver(expected: string): Promise<{ port: number; seen: { authorization?: string; url?: string }[] }> {
  const seen: { authorization?: string; url?: string }[] = []
  const server = createServer((req, res) => {
    seen.push({ authorization: req.headers.authorization, url: req.url })
    req.resume()
    res.writeHead(req.headers.authorization === expected ? 204 : 401).end()
  })
  servers.push(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { port: (server.address() as AddressInfo).port, seen }
}

function sink(url: string, headers: Record<string, string> = {}) {
  const registry = new Registry()
  const metrics = {
    events: new Counter({ name: 'ev_total', help: 'e', labelNames: ['type'] as const, registers: [registry] }),
    deliveries: new Counter({ name: 'del_total', help: 'd', labelNames: ['result'] as const, registers: [registry] }),
  }
  const s = new EventSink(pino({ level: 'silent' }), metrics, { url, headers, maxAttempts: 2, backoffMs: 10, timeoutMs: 2_000 })
  const count = async (result: string) => (await registry.getSingleMetric('del_total')!.get()).values.find((v) => v.labels.result === result)?.value ?? 0
  return { s, count }
}

const event: BudgetEvent = { type: 'budget.threshold', id: 'ev-1', tenant: 'acme', threshold: 0.8, usedUnits: 8, limitUnits: 10, ratio: 0.8, windowMs: 1, hardCap: false, at: new Date().toISOString(), proxy: 'test' }
const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`

describe('webhook URL credentials (sweep 23n)', () => {
  it('user:password in the URL is sent as Basic authorization (percent-decoded), not dropped', async () => {
    const rec = await receiver(basic('igw', 'p@ss:wörd'))
    const { s, count } = sink(`http://igw:p%40ss%3Aw%C3%B6rd@127.0.0.1:${rec.port}/hooks/budget?x=1`)
    s.emit(event)
    await s.drain(5_000)
    expect(rec.seen).toEqual([{ authorization: basic('igw', 'p@ss:wörd'), url: '/hooks/budget?x=1' }])
    expect(await count('delivered')).toBe(1)
  })

  it('an authorization header configured explicitly is the one sent', async () => {
    const rec = await receiver('Bearer t0ken')
    const { s, count } = sink(`http://igw:secret@127.0.0.1:${rec.port}/hook`, { Authorization: 'Bearer t0ken' })
    s.emit(event)
    await s.drain(5_000)
    expect(rec.seen).toEqual([{ authorization: 'Bearer t0ken', url: '/hook' }])
    expect(await count('delivered')).toBe(1)
  })
})
