// `igw proxy --control-plane …` serves as soon as it has started with the control plane's config,
// then ACKs that boot. Until the ACK came back the startup signal handler was still in place, and
// a SIGTERM in that window (a rollout, a slow control plane) exited at once: requests in flight
// were cut. They now drain as at any later SIGTERM. The real CLI and control plane; a relay in
// front of the control plane holds the boot ACK, a real backend holds one request.
import { request as httpRequest, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { connectedProxyArgs, connectedProxyEnv, seedDocument, startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'

let cp: TestControlPlane
let backend: RawBackend
let relay: Server
let relayUrl: string
let igw: SpawnedIgw | undefined
let received = 0
let ackHeld = 0

beforeAll(async () => {
  backend = await startRawBackend((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    received++
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{"data":{"slow":true}}')
    }, 1_500)
  })
  cp = await startTestControlPlane({ seed: seedDocument(backend.url) })
  const target = new URL(cp.url)
  relay = createServer((req, res) => {
    const forward = () => {
      const up = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode!, r.headers)
        r.pipe(res)
      })
      up.on('error', () => res.destroy())
      req.pipe(up)
    }
    // the boot ACK waits 4 s here: the window in which the proxy serves and has not heard back
    if (req.method === 'POST' && /\/ack$/.test(req.url ?? '')) {
      ackHeld++
      setTimeout(forward, 4_000)
    } else forward()
  })
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()))
  relayUrl = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`
})
afterAll(async () => {
  if (igw !== undefined) await igw.stop('SIGKILL')
  relay?.closeAllConnections()
  await new Promise<void>((r) => (relay ? relay.close(() => r()) : r()))
  await cp?.close()
  await backend?.close()
})

it('a SIGTERM while the boot ACK is in flight drains the requests in flight, then exits 0', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'igw-cpsig23-'))
  const keyFile = join(dir, 'cp.pub.pem')
  writeFileSync(keyFile, cp.store.key.publicKeyPem)
  igw = await spawnIgw(connectedProxyArgs({ cpUrl: relayUrl, keyFile, stateDir: join(dir, 'state'), id: 'sig23' }), await connectedProxyEnv('proxy-sig23'))
  await waitUntil(() => ackHeld === 1, 5_000, 'the boot ACK held at the relay')
  const inflight = request(`${igw.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ slow }"}' })
  await waitUntil(() => received === 1, 5_000, 'the request reached the backend')
  igw.child.kill('SIGTERM')
  const r = await inflight
  expect({ status: r.statusCode, body: await r.body.text() }).toEqual({ status: 200, body: '{"data":{"slow":true}}' })
  expect(await igw.exited).toBe(0)
}, 30_000)
