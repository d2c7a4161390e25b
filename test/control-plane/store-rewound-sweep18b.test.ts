// The database under a running control plane goes back — restored from an older backup, or failed
// over to a replica that had not received the last commits. refresh() only ever moved the cached
// head forward, so the instance kept serving (GET /v1/config) a version the database no longer
// had, and the commits made afterwards — numbered from the database's head, hence not above the
// cached one — were never pushed to its proxies, until a restart. The head held by the instance
// now follows the database (logged), and its streams are sent the head (their proxies refuse it
// visibly, as on a reconnect) and every later commit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDb } from '../../control-plane/db.ts'
import { capturingLogger, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { rmSync } from 'node:fs'

interface SseEvent {
  event: string
  id?: string
  data: string
}

/** Open a config stream as proxy `id` running `version`, collecting its events in the background. */
async function openStream(cp: TestControlPlane, id: string, version: number): Promise<{ events: SseEvent[]; close(): void }> {
  const ac = new AbortController()
  const res = await fetch(`${cp.url}/v1/stream?proxy=${id}&version=${version}`, { headers: { authorization: `Bearer ${await cp.token({ sub: id, roles: ['proxy'] })}` }, signal: ac.signal })
  expect(res.status).toBe(200)
  const events: SseEvent[] = []
  void (async () => {
    const dec = new TextDecoder()
    let buf = ''
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true })
        let i
        while ((i = buf.indexOf('\n\n')) !== -1) {
          const block = buf.slice(0, i)
          buf = buf.slice(i + 2)
          const line = (k: string) => block.split('\n').find((l) => l.startsWith(`${k}: `))?.slice(k.length + 2)
          const event = line('event')
          if (event !== undefined) events.push({ event, data: line('data') ?? '', ...(line('id') !== undefined ? { id: line('id')! } : {}) })
        }
      }
    } catch {
      // aborted
    }
  })()
  return { events, close: () => ac.abort() }
}

describe('a database that goes back under a running control plane', () => {
  let cp: TestControlPlane
  const log = capturingLogger()
  beforeAll(async () => {
    cp = await startTestControlPlane({ logger: log.logger })
  })
  afterAll(async () => {
    await cp?.close()
    rmSync(cp.dir, { recursive: true, force: true })
  })
  const head = async () => (await (await cp.api('/v1/config')).json()) as { version: number; digest: string; document: { tenants: Record<string, unknown> } }

  it('is followed: the head served is the database\'s, streams are sent it, and later commits are pushed', { timeout: 60_000 }, async () => {
    for (const t of ['r2', 'r3', 'r4']) expect((await cp.api(`/v1/tenants/${t}`, { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })).status).toBe(201)
    expect((await head()).version).toBe(4)
    const stream = await openStream(cp, 'rewound-proxy', 4)
    await expect.poll(() => stream.events.map((e) => e.event), { timeout: 10_000 }).toEqual(['current'])
    try {
      // "Restore" the database to version 2 behind the control plane's back.
      const db = openDb(cp.dbSpec)
      try {
        await db.query('DELETE FROM config_versions WHERE version > 2')
      } finally {
        await db.close()
      }
      // The head poll (5 s) notices.
      await expect.poll(async () => (await head()).version, { timeout: 30_000, interval: 250 }).toBe(2)
      expect(log.lines.some((l) => l.previousVersion === 4 && l.version === 2 && /went back/.test(String(l.msg)))).toBe(true)
      // The stream that had been told 4 is sent the database's head (its proxy NACKs it as older).
      await expect.poll(() => stream.events.filter((e) => e.event === 'snapshot').map((e) => e.id), { timeout: 10_000 }).toEqual(['2'])
      // A commit now is version 3 — served and pushed (it used to stay invisible: 3 is not above the cached 4).
      const put = await cp.api('/v1/tenants/after-restore', { method: 'PUT', body: JSON.stringify({ tier: 'silver' }) })
      expect(((await put.json()) as { version: number }).version).toBe(3)
      const h = await head()
      expect(h.version).toBe(3)
      expect(Object.keys(h.document.tenants)).toContain('after-restore')
      expect(Object.keys(h.document.tenants)).not.toContain('r4')
      await expect.poll(() => stream.events.filter((e) => e.event === 'snapshot').map((e) => e.id), { timeout: 10_000 }).toEqual(['2', '3'])
      const pushed = JSON.parse(JSON.parse(stream.events.at(-1)!.data).payload as string) as { version: number; digest: string }
      expect(pushed).toMatchObject({ version: 3, digest: h.digest })
    } finally {
      stream.close()
    }
  })

  it('another document under the same version number (restored, then committed elsewhere) replaces the head held, and streams get THAT document', { timeout: 60_000 }, async () => {
    const before = await head()
    expect(before.version).toBe(3)
    // A stream that was pushed version 3 (the event text the hub keeps for the newest version).
    const stream = await openStream(cp, 'same-number-proxy', 1)
    await expect.poll(() => stream.events.map((e) => [e.event, e.id]), { timeout: 10_000 }).toEqual([['snapshot', '3']])
    try {
      const db = openDb(cp.dbSpec)
      try {
        await db.query('DELETE FROM config_versions WHERE version > 2')
      } finally {
        await db.close()
      }
      // Another instance on the same database commits version 3 with other content.
      const other = await startTestControlPlane({ dir: cp.dir })
      try {
        const put = await other.api('/v1/tenants/elsewhere', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })
        expect(((await put.json()) as { version: number }).version).toBe(3)
      } finally {
        await other.close()
      }
      await expect.poll(async () => (await head()).digest, { timeout: 30_000, interval: 250 }).not.toBe(before.digest)
      const now = await head()
      expect(now.version).toBe(3)
      expect(Object.keys(now.document.tenants)).toContain('elsewhere')
      await expect.poll(() => stream.events.length, { timeout: 10_000 }).toBe(2)
      const pushed = JSON.parse(JSON.parse(stream.events[1]!.data).payload as string) as { version: number; digest: string }
      expect(pushed).toEqual(expect.objectContaining({ version: 3, digest: now.digest }))
    } finally {
      stream.close()
    }
  })
})
