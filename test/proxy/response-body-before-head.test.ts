// A response filter may read the upstream body during an async response phase, before the
// proxy commits the head, and still answer with a status of its own (what DLP needs to refuse
// an export before any byte of it reaches the client). Real WorkerProxy, real backend.
import type { AddressInfo } from 'node:net'
import { Readable, Transform, type TransformCallback } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../config/load.ts'
import { filterModules, type FilterModules } from '../../filters/registry.ts'
import type { Filter, ResponseInfo } from '../../proxy/filter.ts'
import { ProxyMetrics } from '../../proxy/metrics.ts'
import { WorkerProxy } from '../../proxy/worker-proxy.ts'
import { LogCapture } from '../helpers/proxy.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'

const LINE = `${'x'.repeat(1023)}\n`

/** Reads up to `limit` bytes (or to the end) without consuming more than it needs. */
function readPrefix(body: Readable, limit: number): Promise<{ chunks: Buffer[]; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const done = (ended: boolean) => {
      body.off('data', onData)
      body.off('end', onEnd)
      body.off('error', onError)
      body.pause()
      resolve({ chunks, ended })
    }
    const onData = (c: Buffer) => {
      chunks.push(c)
      size += c.length
      if (size >= limit) done(false)
    }
    const onEnd = () => done(true)
    const onError = (err: Error) => reject(err)
    body.on('data', onData)
    body.on('end', onEnd)
    body.on('error', onError)
  })
}

class Upper extends Transform {
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    cb(null, Buffer.from(chunk.toString('latin1').toUpperCase(), 'latin1'))
  }
}

async function start(filter: Filter, backend: RawBackend) {
  const config = validateConfig({ routes: [{ name: 'r', upstream: backend.url, type: 'http', filters: [{ name: 'request-id' }] }] })
  const mods: FilterModules = { ...filterModules, 'request-id': { create: () => filter } }
  const logs = new LogCapture()
  const proxy = new WorkerProxy({ workerId: 0, logger: pino({ level: 'info' }, logs), metrics: new ProxyMetrics(new Registry()), shared: {}, modules: mods }, config)
  await proxy.apply(1, config)
  await proxy.listen('127.0.0.1', 0)
  return { url: `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`, logs, close: () => proxy.drain(100) }
}

describe('reading the upstream body before the head', () => {
  let backend: RawBackend
  let closedEarly = 0
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      const lines = Number(new URL(req.url!, 'http://x').searchParams.get('lines') ?? '1')
      res.writeHead(200, { 'content-type': 'text/plain' })
      let i = 0
      res.on('close', () => {
        if (i < lines) closedEarly++
      })
      const pump = () => {
        while (i < lines) {
          i++
          if (!res.write(LINE)) return void res.once('drain', pump)
        }
        res.end()
      }
      pump()
    })
  })
  afterAll(async () => {
    await backend?.close()
  })

  it('a filter that read the whole (small) body answers with its own status and bytes', async () => {
    const s = await start(
      {
        name: 'f',
        async onResponse(_ctx, res: ResponseInfo) {
          const { chunks, ended } = await readPrefix(res.body as Readable, 1 << 20)
          expect(ended).toBe(true)
          res.status = 403
          res.headers = { 'content-type': 'text/plain', 'x-seen': String(Buffer.concat(chunks).length) }
          res.body = Buffer.from('refused')
        },
      },
      backend,
    )
    try {
      const r = await request(`${s.url}/?lines=3`)
      expect(r.statusCode).toBe(403)
      expect(r.headers['x-seen']).toBe(String(3 * LINE.length))
      expect(await r.body.text()).toBe('refused')
    } finally {
      await s.close()
    }
  })

  it('refusing after a prefix of a long body stops the upstream quietly (no mid-response error)', async () => {
    const before = closedEarly
    const s = await start(
      {
        name: 'f',
        async onResponse(_ctx, res: ResponseInfo) {
          const { ended } = await readPrefix(res.body as Readable, 64 * 1024)
          expect(ended).toBe(false)
          res.status = 403
          res.headers = { 'content-type': 'text/plain' }
          res.body = Buffer.from('refused early')
        },
      },
      backend,
    )
    try {
      const r = await request(`${s.url}/?lines=200000`)
      expect(r.statusCode).toBe(403)
      expect(await r.body.text()).toBe('refused early')
      await new Promise((r) => setTimeout(r, 100))
      expect(closedEarly).toBe(before + 1)
      expect(s.logs.find('upstream failed mid-response')).toEqual([])
    } finally {
      await s.close()
    }
  })

  it('after a prefix the filter can stream the rest through a transform (prefix first, in order)', async () => {
    const s = await start(
      {
        name: 'f',
        async onResponse(_ctx, res: ResponseInfo) {
          const upstream = res.body as Readable
          const { chunks } = await readPrefix(upstream, 16 * 1024)
          const t = new Upper()
          for (const c of chunks) t.write(c)
          upstream.pipe(t)
          res.body = t
        },
      },
      backend,
    )
    try {
      const r = await request(`${s.url}/?lines=500`)
      expect(r.statusCode).toBe(200)
      const text = await r.body.text()
      expect(text.length).toBe(500 * LINE.length)
      expect(text).toBe(LINE.toUpperCase().repeat(500))
    } finally {
      await s.close()
    }
  })

  it('a transform that stops reading and ends its own output gives a complete response, not a cut one', async () => {
    const s = await start(
      {
        name: 'f',
        onResponse(_ctx, res: ResponseInfo) {
          const upstream = res.body as Readable
          let seen = 0
          const t = new Transform({
            transform(chunk: Buffer, _e, cb) {
              seen += chunk.length
              if (seen < 32 * 1024) return cb(null, chunk)
              upstream.unpipe(t)
              upstream.destroy() // no error: stop quietly
              this.push('END\n')
              this.push(null)
              cb()
            },
          })
          upstream.pipe(t)
          res.body = t
        },
      },
      backend,
    )
    try {
      const r = await request(`${s.url}/?lines=100000`)
      const text = await r.body.text()
      expect(text.endsWith('END\n')).toBe(true)
      expect(s.logs.find('upstream failed mid-response')).toEqual([])
    } finally {
      await s.close()
    }
  })
})
