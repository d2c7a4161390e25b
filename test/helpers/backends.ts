// Real backends for tests: the demo graphql-yoga backend, and a plain node:http server whose
// handler a test writes (slow headers, stalled bodies, resets, echoes).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
export { startDemoBackend, type DemoBackend } from '../../proxy/demo-backend.ts'

export interface RawBackend {
  server: Server
  port: number
  url: string
  requests: IncomingMessage[]
  close(): Promise<void>
}

export async function startRawBackend(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<RawBackend> {
  const requests: IncomingMessage[] = []
  const server = createServer((req, res) => {
    requests.push(req)
    handler(req, res)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/** Echo backend: answers the request line, raw headers and body size as JSON. */
export function echoHandler(req: IncomingMessage, res: ServerResponse): void {
  let size = 0
  req.on('data', (c: Buffer) => (size += c.length))
  req.on('end', () => {
    const body = JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, headers: req.headers, size })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
}
