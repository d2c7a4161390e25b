// `Upgrade: h2c` (what `curl --http2` sends on http://, and Java's HttpClient) is an HTTP/1.1
// request with an offer the server may decline by simply answering it, as Envoy and nginx do.
// Node handed every Upgrade request to the WebSocket handler, which refused it: 400 "WebSocket
// upgrades are not enabled on this route" for a plain GraphQL query. Now it is served, and the
// offer (Upgrade, HTTP2-Settings) does not reach the backend; WebSocket upgrades still work.
import { spawn, spawnSync } from 'node:child_process'
import { connect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('Upgrade: h2c on an HTTP/1.1 proxy', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const seen: Record<string, string | string[] | undefined>[] = []
  beforeAll(async () => {
    backend = await startRawBackend((req, res) => {
      seen.push(req.headers)
      req.resume()
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end('{"data":{"hello":"world"}}')
      })
    })
    backend.server.on('upgrade', (req, socket) => {
      // a WebSocket backend for the passthrough check
      const wss = new WebSocketServer({ noServer: true })
      wss.handleUpgrade(req, socket, Buffer.alloc(0), (ws) => ws.on('message', (m) => ws.send(`echo ${String(m)}`)))
    })
    proxy = await startTestProxy({ routes: [{ name: 'g', upstream: backend.url, type: 'graphql', websocket: { enabled: true } }] as never })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  const raw = (text: string) =>
    new Promise<string>((resolve, reject) => {
      const s = connect(proxy.port, '127.0.0.1', () => s.write(text))
      let got = ''
      s.setEncoding('latin1')
      s.on('data', (d: string) => {
        got += d
        if (got.endsWith('\r\n0\r\n\r\n') || /^HTTP\/1\.1 [45]/.test(got)) s.end() // the chunked body's end, or a refusal
      })
      s.on('close', () => resolve(got))
      s.on('error', reject)
    })

  it('a GraphQL GET offering h2c is answered by the backend over HTTP/1.1; the offer is not forwarded', async () => {
    const before = seen.length
    const res = await raw('GET /graphql?query=%7Bhello%7D HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n')
    expect(res).toMatch(/^HTTP\/1\.1 200 /)
    expect(res).toContain('{"data":{"hello":"world"}}')
    expect(seen.length).toBe(before + 1)
    const h = seen.at(-1)!
    expect(h.upgrade).toBeUndefined()
    expect(h['http2-settings']).toBeUndefined()
  })

  it('curl --http2 against it gets the answer (when curl is installed)', async () => {
    if (spawnSync('curl', ['--version']).error !== undefined) return // no curl here: the raw-socket test above stands
    // Not spawnSync: the backend runs on this thread and must answer while curl waits.
    const c = spawn('curl', ['-sS', '--max-time', '20', '--http2', '-H', 'content-type: application/json', '--data', '{"query":"{ hello }"}', `${proxy.url}/graphql`])
    let out = ''
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    const code = await new Promise<number | null>((resolve) => c.on('exit', resolve))
    expect(code).toBe(0)
    expect(out).toBe('{"data":{"hello":"world"}}')
  })

  it('a WebSocket upgrade still goes through', async () => {
    const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/graphql`)
    await new Promise((resolve, reject) => {
      ws.on('open', resolve)
      ws.on('error', reject)
    })
    ws.send('hi')
    const m = await new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))))
    expect(m).toBe('echo hi')
    ws.close()
  })
})
