// The event webhook's retries: a receiver that answers 429 (or 503) with Retry-After is asked
// again no sooner than it said (within the one-minute ceiling), not at backoffMs — with the
// defaults every attempt used to be spent within ~4 s and a rate-limited receiver lost the event.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Counter, Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { EventSink, retryAfterMs, type BudgetEvent } from '../../../filters/quota/quota-events.ts'

const servers: Server[] = []
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections()
    await new Promise<void>((r) => s.close(() => r()))
  }
})

async function receiver(answer: (n: number) => { status: number; headers?: Record<string, string> }): Promise<{ url: string; hits: { at: number; id: string }[] }> {
  const hits: { at: number; id: string }[] = []
  const server = createServer((req, res) => {
    hits.push({ at: Date.now(), id: String(req.headers['igw-event-id']) })
    req.resume()
    const a = answer(hits.length)
    res.writeHead(a.status, a.headers).end()
  })
  servers.push(server)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, hits }
}

function sink(url: string) {
  const registry = new Registry()
  const metrics = {
    events: new Counter({ name: 'ev_total', help: 'e', labelNames: ['type'] as const, registers: [registry] }),
    deliveries: new Counter({ name: 'del_total', help: 'd', labelNames: ['result'] as const, registers: [registry] }),
  }
  const s = new EventSink(pino({ level: 'silent' }), metrics, { url, headers: {}, maxAttempts: 3, backoffMs: 20, timeoutMs: 2_000 })
  const count = async (result: string) => (await registry.getSingleMetric('del_total')!.get()).values.find((v) => v.labels.result === result)?.value ?? 0
  return { s, count }
}

const event = (id: string): BudgetEvent => ({ type: 'budget.threshold', id, tenant: 'acme', threshold: 0.8, usedUnits: 8, limitUnits: 10, ratio: 0.8, windowMs: 1, hardCap: false, at: new Date().toISOString(), proxy: 'test' })

describe('webhook Retry-After (sweep 14d)', () => {
  it('429 with Retry-After: 1 — the next attempt waits about a second, then the event is delivered', async () => {
    const rec = await receiver((n) => (n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 }))
    const { s, count } = sink(rec.url)
    s.emit(event('e-429'))
    await s.drain(10_000)
    expect(rec.hits).toHaveLength(2)
    expect(rec.hits.map((h) => h.id)).toEqual(['e-429', 'e-429'])
    expect(rec.hits[1]!.at - rec.hits[0]!.at).toBeGreaterThanOrEqual(900)
    expect(await count('delivered')).toBe(1)
  })

  it('503 with an HTTP-date Retry-After is honoured the same way', async () => {
    const rec = await receiver((n) => (n === 1 ? { status: 503, headers: { 'retry-after': new Date(Date.now() + 2_000).toUTCString() } } : { status: 200 }))
    const { s, count } = sink(rec.url)
    s.emit(event('e-503'))
    await s.drain(10_000)
    expect(rec.hits).toHaveLength(2)
    expect(rec.hits[1]!.at - rec.hits[0]!.at).toBeGreaterThanOrEqual(900) // an HTTP-date has 1 s resolution
    expect(await count('delivered')).toBe(1)
  })

  it('reads delay-seconds and HTTP-dates; anything else is no request to wait', () => {
    const now = Date.UTC(2026, 10, 26, 12)
    expect(retryAfterMs('30', now)).toBe(30_000)
    expect(retryAfterMs(new Date(now + 5_000).toUTCString(), now)).toBe(5_000)
    expect(retryAfterMs(new Date(now - 5_000).toUTCString(), now)).toBe(0)
    expect(retryAfterMs('soon', now)).toBe(0)
    expect(retryAfterMs('-3', now)).toBe(0)
    expect(retryAfterMs(undefined, now)).toBe(0)
  })
})
