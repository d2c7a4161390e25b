// The config stream's parser on the proxy (sseEvents), sweep 17. A snapshot is one `data:` line
// as long as the config document, arriving as hundreds or thousands of reads (a WAN link, TLS
// records of 16 KiB). Every read used to be appended to one string that was then searched for a
// line end from its start: quadratic — a 16 MB document in 4 KiB reads was 53 s of CPU on the
// supervisor's thread (16 MB in 16 KiB reads: ~6 s; 32 MB: ~23 s), during which the proxy
// applied nothing and its stream's ACKs waited. Then a real control plane's large head, end to end.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ControlPlaneClient, sseEvents, type SseEvent } from '../../proxy/control-plane-client.ts'
import { seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

async function* inReads(text: string, size: number): AsyncGenerator<Buffer> {
  const b = Buffer.from(text)
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}

async function collect(text: string, size: number): Promise<SseEvent[]> {
  const out: SseEvent[] = []
  for await (const ev of sseEvents(inReads(text, size))) out.push(ev)
  return out
}

describe('sseEvents', () => {
  it('parses a 24 MB event arriving in 4 KiB reads in linear time (bounded far below the old quadratic minutes)', async () => {
    const big = `{"payload":"${'x'.repeat(24 * 1024 * 1024)}"}`
    const text = `: ping\n\nid: 7\nevent: snapshot\ndata: ${big}\n\n: ping\n\nevent: current\ndata: {"version":7}\n\n`
    const t0 = Date.now()
    const evs = await collect(text, 4096)
    // Generous for a loaded 2-core machine: linear parsing takes well under a second here; the
    // quadratic one took 53 s on 16 MB, about twice that on this input.
    expect(Date.now() - t0).toBeLessThan(15_000)
    expect(evs).toHaveLength(2)
    expect(evs[0]).toEqual({ event: 'snapshot', id: '7', data: big })
    expect(evs[1]).toEqual({ event: 'current', data: '{"version":7}' })
  }, 240_000)

  it('keeps the stream format: CRLF line ends, a line end split across reads, multi-line data, one leading space, multi-byte characters split across reads', async () => {
    const text = 'event: snapshot\r\nid: 3\r\ndata:  two spaces\r\ndata:no space\r\n\r\n: comment\n\nevent: current\ndata: {"name":"Café €"}\n\n'
    for (const size of [1, 2, 3, 5, 7, 64, 4096]) {
      expect(await collect(text, size), `reads of ${size} bytes`).toEqual([
        { event: 'snapshot', id: '3', data: ' two spaces\nno space' },
        { event: 'current', data: '{"name":"Café €"}' },
      ])
    }
  })
})

describe('a large head from a real control plane', () => {
  let cp: TestControlPlane
  // ~6 MB of document (many tenants), with non-ASCII text.
  const tenants: Record<string, { tier: string; displayName: string }> = {}
  for (let i = 0; i < 30_000; i++) tenants[`t${i}`] = { tier: 'gold', displayName: `Tenant ${i} — Ünïcode ${'y'.repeat(150)}` }
  beforeAll(async () => {
    const seed = seedDocument() as { tenants: Record<string, unknown> }
    Object.assign(seed.tenants, tenants)
    cp = await startTestControlPlane({ seed: seed as never })
  }, 120_000)
  afterAll(async () => {
    await cp?.close()
  })

  it('boots the client with the whole document, verified', async () => {
    const c = new ControlPlaneClient({
      url: cp.url,
      token: await cp.token({ sub: 'proxy-big', roles: ['proxy'] }),
      stateDir: mkdtempSync(join(tmpdir(), 'igw-cpsse17-')),
      proxyId: 'big-1',
      publicKeyPem: cp.store.key.publicKeyPem,
      toConfig: (doc) => doc as never,
      usageIntervalMs: 3_600_000,
      bootTimeoutMs: 60_000,
      log: () => undefined,
    })
    try {
      const boot = await c.bootstrap()
      expect(boot?.source).toBe('control-plane')
      const got = (boot!.config as unknown as { tenants: Record<string, { displayName: string }> }).tenants
      expect(Object.keys(got)).toHaveLength(30_002)
      expect(got.t29999!.displayName).toBe(tenants.t29999!.displayName)
    } finally {
      await c.close()
    }
  }, 120_000)
})
