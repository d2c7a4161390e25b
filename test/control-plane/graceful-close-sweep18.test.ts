// close() — what SIGTERM on `igw control-plane` runs — cut every connection at once: an admin
// write whose request was still arriving (or being committed) got a reset connection, and the
// client could not tell whether its change was kept. Now it stops accepting, ends the config
// streams (proxies reconnect elsewhere), lets requests in flight finish (up to a grace period),
// and only then closes the database.
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { openDb } from '../../control-plane/db.ts'
import { startControlPlane, type ControlPlane } from '../../control-plane/server.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { seedDocument, startTestControlPlane, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'

const dirs: string[] = []
const open: { close(): Promise<void> }[] = []
afterEach(async () => {
  for (const c of open.splice(0)) await c.close().catch(() => undefined)
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

/** A PUT whose body is sent in two parts: the request is in flight until `finish` is called. */
function slowPut(url: string, path: string, token: string, body: string): { req: ClientRequest; sent: Promise<void>; response: Promise<{ status: number; text: string }>; finish(): void } {
  const u = new URL(path, url)
  const req = httpRequest({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } })
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    req.once('error', reject)
    req.once('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.once('end', () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString() }))
      res.once('error', reject)
    })
  })
  const half = Math.floor(body.length / 2)
  const sent = new Promise<void>((resolve) => req.write(body.slice(0, half), () => resolve()))
  return { req, sent, response, finish: () => req.end(body.slice(half)) }
}

async function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', () => resolve(true))
  })
}

describe('control plane close() is graceful', () => {
  it('an admin write in flight when close() starts is answered and committed; streams end; new connections are refused', async () => {
    const cp = await startTestControlPlane()
    dirs.push(cp.dir)
    open.push(cp)
    const admin = await cp.token({ sub: 'ops', roles: ['admin'] })
    const proxyToken = await cp.token({ sub: 'proxy-a', roles: ['proxy'] })
    // A proxy's config stream, open.
    const stream = await request(`${cp.url}/v1/stream?proxy=p1&version=0`, { headers: { authorization: `Bearer ${proxyToken}` } })
    expect(stream.statusCode).toBe(200)
    const streamDone = stream.body.text()

    const put = slowPut(cp.url, '/v1/tenants/initech', admin, JSON.stringify({ tier: 'gold', timezone: 'Europe/Berlin' }))
    // The request has reached the server (its handler waits for the rest of the body).
    await put.sent
    await new Promise((r) => setTimeout(r, 300))

    let closed = false
    const closing = cp.close().then(() => (closed = true))
    // The stream is ended (cleanly: the proxy reconnects to another instance), the listener closed.
    await expect(streamDone).resolves.toEqual(expect.any(String))
    await expect.poll(() => refused(cp.port), { timeout: 10_000 }).toBe(true)
    expect(closed).toBe(false) // still waiting for the write in flight

    put.finish()
    const answer = await put.response
    expect(answer.status).toBe(201)
    const version = (JSON.parse(answer.text) as { version: number }).version
    await closing

    // The change was committed, with its audit entry, before the database was closed.
    const db = openDb(cp.dbSpec)
    try {
      const rows = await db.query<{ version: unknown }>('SELECT version FROM config_versions ORDER BY version DESC LIMIT 1')
      expect(Number(rows[0]!.version)).toBe(version)
      const audit = await db.query<{ resource: string }>('SELECT resource FROM audit_log ORDER BY seq DESC LIMIT 1')
      expect(audit[0]!.resource).toBe('tenants/initech')
    } finally {
      await db.close()
    }
  }, 30_000)

  it('a request still in flight after the grace period is cut, and close() returns', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'igw-close18-'))
    dirs.push(dir)
    const cp: ControlPlane = await startControlPlane({
      db: `sqlite:${join(dir, 'igw.db')}`,
      host: '127.0.0.1',
      port: 0,
      auth: { secret: TEST_AUTH_SECRET },
      signingKey: loadOrCreateSigningKey(join(dir, 'signing-key.pem')),
      seed: seedDocument(),
      logger: pino({ level: 'silent' }),
      shutdownGraceMs: 300,
    })
    open.push(cp)
    const admin = await mintToken(TEST_AUTH_SECRET, { sub: 'ops', roles: ['admin'] })
    const put = slowPut(cp.url, '/v1/tenants/initech', admin, JSON.stringify({ tier: 'gold' }))
    const outcome = put.response.then(
      () => 'answered',
      (err: NodeJS.ErrnoException) => err.code ?? err.message,
    )
    await put.sent
    await new Promise((r) => setTimeout(r, 300))
    const t0 = Date.now()
    await cp.close()
    // Bounded by the grace period (generously: a loaded machine), not by the stuck client.
    expect(Date.now() - t0).toBeLessThan(8_000)
    expect(await outcome).toMatch(/ECONNRESET|socket hang up/)
    put.req.destroy()
  }, 30_000)
})
