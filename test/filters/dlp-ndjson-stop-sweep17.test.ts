// DLP sweep 17: an NDJSON export stopped mid-stream (a block action, or a record that does not
// parse) lost the clean records that had been vetted in the same upstream chunk as the record
// that stopped it: the session discarded everything released by that write once the stop was
// set. The client got fewer records than the error record's `records` said were delivered (1956
// of 2000 here), so a client resuming after the last record it has would skip none and trust a
// count that was wrong. Now every record before the one that stopped the export is delivered.
// Real proxy (worker thread), real node:http backend writing in pieces, undici client, 127.0.0.1.
import { mkdtempSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const CLEAN = 2000

function body(last: string): string {
  let s = ''
  for (let i = 0; i < CLEAN; i++) s += `${JSON.stringify({ id: i + 1, email: `user${i}@example.com` })}\n`
  return `${s}${last}\n${JSON.stringify({ id: CLEAN + 2, email: 'after@example.com' })}\n`
}

describe('NDJSON export stopped after the head', () => {
  let raw: RawBackend
  let proxy: TestProxy
  const bodies: Record<string, string> = {
    '/export/block': body(JSON.stringify({ id: CLEAN + 1, ssn: '123-45-6789' })),
    '/export/malformed': body(`{"id":${CLEAN + 1},"x":123-45-6789}`),
  }

  beforeAll(async () => {
    raw = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' })
      const b = bodies[req.url!]!
      let at = 0
      // pieces of 8 KiB: ~40 records per chunk, the stop lands inside one
      const step = () => {
        if (at >= b.length) return res.end()
        res.write(b.slice(at, at + 8192))
        at += 8192
        setImmediate(step)
      }
      step()
    })
    const keyring = join(mkdtempSync(join(tmpdir(), 'igw-dlp-stop17-')), 'keyring.json')
    proxy = await startTestProxy({
      mode: 'ingress',
      dlp: { keyring: { file: keyring }, presets: { m: { email: 'mask', ssn_us: 'block' } }, policy: { enabled: false } },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, upstream: raw.url, type: 'http', filters: [{ name: 'dlp', preset: 'm', lookaheadBytes: '1kib', exports: { paths: [{ prefix: '/export/' }] } }] }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await raw?.close()
  })

  for (const [path, stopKind] of [
    ['/export/block', 'block'],
    ['/export/malformed', 'malformed'],
  ] as const) {
    it(`${stopKind}: every record before the stop arrives, and the error record's count matches`, async () => {
      const r = await request(`${proxy.url}${path}`)
      const text = await r.body.text()
      expect(r.statusCode).toBe(200)
      expect(text).not.toContain('123-45-6789')
      expect(text).not.toContain('after@')
      const lines = text.split('\n').filter((l) => l !== '')
      const records = lines.slice(0, -1).map((l) => JSON.parse(l) as { id: number; email: string })
      // before: 1956 records (the 44 vetted in the stopping chunk were dropped)
      expect(records.length).toBe(CLEAN)
      expect(records.map((x) => x.id)).toEqual(Array.from({ length: CLEAN }, (_, i) => i + 1))
      expect(records.every((x) => x.email === 'u***@example.com')).toBe(true)
      const err = JSON.parse(lines.at(-1)!) as { errors: { extensions: { code: string; records: number } }[] }
      expect(err.errors[0]!.extensions.code).toBe('DLP_BLOCKED')
      expect(err.errors[0]!.extensions.records).toBe(CLEAN)
      expect(r.trailers['x-dlp']).toMatch(stopKind === 'block' ? /blocked=ssn_us:1$/ : /stopped=malformed$/)
    })
  }
})
