// When the last quota filter of a thread closed, the event webhook's undici Agent stayed open
// (its keep-alive connections to the receiver with it, for as long as the receiver allowed), and
// events still waiting to be retried when the ~1 s drain ended were lost with no metric and no
// log line. Now the Agent is closed with the runtime, and what is given up is counted as
// igw_quota_webhook_deliveries_total{result="dropped"} and said in one log line.
import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import type { BudgetEvent } from '../../../filters/quota/quota-events.ts'
import { quotaRuntime } from '../../../filters/quota/quota-runtime.ts'
import { QUOTA_SHARED_BYTES } from '../../../filters/quota/shared-table.ts'

const servers: Server[] = []
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections()
    await new Promise((r) => s.close(r))
  }
})

/** A receiver answering every POST with `status`, keeping connections alive for a minute. */
async function receiver(status: number): Promise<{ server: Server; url: string; hits: () => number }> {
  let hits = 0
  const server = createServer((req, res) => {
    hits++
    req.resume()
    req.on('end', () => res.writeHead(status, { 'content-length': '0' }).end())
  })
  server.keepAliveTimeout = 60_000
  servers.push(server)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, hits: () => hits }
}

function connections(server: Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))))
}

function setup(url: string, backoffMs: number) {
  const config = validateConfig({
    routes: [{ name: 'g', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }, { name: 'quota', kind: 'graphql' }] }],
    tenants: { acme: {} },
    quotas: { events: { webhook: { url, maxAttempts: 5, backoffMs, timeoutMs: 2_000 } } },
  })
  const lines: { msg: string; events?: number }[] = []
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l))
      cb()
    },
  })
  const rt = quotaRuntime(new SharedArrayBuffer(QUOTA_SHARED_BYTES), config, pino({ level: 'info' }, sink))
  const registry = new Registry()
  const a = rt.attach(config, registry, undefined)
  const deliveries = async (result: string) => {
    const m = (await registry.getSingleMetric('igw_quota_webhook_deliveries_total')!.get()).values.find((v) => v.labels.result === result)
    return m?.value ?? 0
  }
  return { rt, a, lines, deliveries }
}

function event(id: string): BudgetEvent {
  return { type: 'budget.threshold', id, tenant: 'acme', threshold: 0.8, usedUnits: 80, limitUnits: 100, ratio: 0.8, windowMs: 86_400_000, hardCap: false, at: new Date().toISOString(), proxy: 'test' }
}

describe('event webhook at shutdown (sweep 23v)', () => {
  it('closing the last quota filter closes the webhook\'s keep-alive connections', async () => {
    const hook = await receiver(200)
    const { rt, a, deliveries } = setup(hook.url, 100)
    rt.emit(event('e1'))
    await expect.poll(() => deliveries('delivered'), { timeout: 10_000 }).toBe(1)
    expect(await connections(hook.server)).toBe(1) // kept alive for the next event
    await rt.detach(a)
    await expect.poll(() => connections(hook.server), { timeout: 2_000 }).toBe(0)
  })

  it('events still waiting to be retried when the drain ends are counted as dropped and logged', async () => {
    const hook = await receiver(503)
    const { rt, a, lines, deliveries } = setup(hook.url, 30_000)
    rt.emit(event('e2'))
    rt.emit(event('e3'))
    await expect.poll(() => deliveries('retry'), { timeout: 10_000 }).toBe(2) // both wait 30 s for their second attempt
    await rt.detach(a) // drains for 1 s, then gives up
    expect(await deliveries('dropped')).toBe(2)
    expect(await deliveries('failed')).toBe(0)
    expect(lines.find((l) => l.msg.includes('not delivered at shutdown'))?.events).toBe(2)
    await expect.poll(() => rt.events!.pending, { timeout: 10_000 }).toBe(0)
    expect(hook.hits()).toBe(2)
  })
})
