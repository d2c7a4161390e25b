// `igw proxy` on a port another igw already listens on. Worker threads listen with `reusePort`,
// and so does every igw: a second proxy (a forgotten one, a copy started with another admin port
// or config) bound beside the first without a word, and the kernel then split the connections
// between the two processes, their configs and their quotas. It must refuse to start, as a plain
// listener there makes it do (StartupError "listen": the CLI's one line and exit 69).
import { createServer, type Server } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('proxy port held by another reusePort listener', () => {
  let backend: RawBackend
  beforeAll(async () => {
    backend = await startRawBackend((_req, res) => res.end('ok'))
  })
  afterAll(async () => {
    await backend?.close()
  })

  const routes = () => [{ name: 'a', upstream: backend.url, type: 'http' as const }]

  it('a second igw on the same port fails to start, naming the address', async () => {
    const first = await startTestProxy({ routes: routes() })
    let second: TestProxy | undefined
    try {
      const taken = `127.0.0.1:${first.port}`
      const attempt = startTestProxy({ listen: taken, routes: routes() })
      void attempt.then((p) => (second = p), () => undefined)
      await expect(attempt).rejects.toMatchObject({ name: 'StartupError', kind: 'listen', message: `cannot listen on ${taken} (listen): address already in use (another process listens there) [EADDRINUSE]` })
    } finally {
      await second?.close()
      await first.close()
    }
  })

  it('a holder that is not igw (reusePort too) is refused the same way', async () => {
    const holder: Server = createServer((s) => s.destroy())
    await new Promise<void>((resolve, reject) => {
      holder.once('error', reject)
      holder.listen({ host: '127.0.0.1', port: 0, reusePort: true }, resolve)
    })
    const taken = `127.0.0.1:${(holder.address() as { port: number }).port}`
    let second: TestProxy | undefined
    try {
      const attempt = startTestProxy({ listen: taken, routes: routes() })
      void attempt.then((p) => (second = p), () => undefined)
      await expect(attempt).rejects.toMatchObject({ kind: 'listen' })
    } finally {
      await second?.close()
      await new Promise<void>((resolve) => holder.close(() => resolve()))
    }
  })

  it('a free fixed port still starts, and a proxy restarted on it after a stop binds again', async () => {
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen({ host: '127.0.0.1', port: 0 }, resolve))
    const port = (probe.address() as { port: number }).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const a = await startTestProxy({ listen: `127.0.0.1:${port}`, shutdown: { drainTimeoutMs: 400 }, routes: routes() })
    expect(a.port).toBe(port)
    expect(await (await fetch(`${a.url}/x`)).text()).toBe('ok')
    await a.close()
    const b = await startTestProxy({ listen: `127.0.0.1:${port}`, shutdown: { drainTimeoutMs: 400 }, routes: routes() })
    try {
      expect(await (await fetch(`${b.url}/x`)).text()).toBe('ok')
    } finally {
      await b.close()
    }
  })
})
