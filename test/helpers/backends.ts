// Real backends for tests: the demo graphql-yoga backend, and a plain node:http server whose
// handler a test writes (slow headers, stalled bodies, resets, echoes).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
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

/**
 * A backend that records each request body (in `bodies`) and answers 200 JSON with `answer(body)`:
 * for tests that check what the proxy forwarded.
 */
export function startRecordingBackend(bodies: string[], answer: (body: string) => string): Promise<RawBackend> {
  return startRawBackend((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => (body += c))
    req.on('end', () => {
      bodies.push(body)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(answer(body))
    })
  })
}

/** Writes `total` bytes of 'a' to `res` in 64 KiB chunks as fast as the reader takes them (no buffering past 'drain'), then ends it. */
export function writeBytes(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 << 10, 97)
  let left = total
  const more = (): void => {
    while (left > 0) {
      left -= chunk.length
      if (left <= 0) return void res.end(chunk)
      if (!res.write(chunk)) return void res.once('drain', more)
    }
  }
  more()
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

export interface RawTcpUpstream {
  url: string
  /** Request heads received, in order. */
  heads: string[]
  /** Sockets the proxy opened that are still open. */
  open: Set<Socket>
  close(): Promise<void>
}

/** A TCP backend on 127.0.0.1:0: `answer` gets each request head and writes whatever it likes. */
export async function startRawTcpUpstream(answer: (sock: Socket, head: string, path: string) => void): Promise<RawTcpUpstream> {
  const open = new Set<Socket>()
  const heads: string[] = []
  const server = createNetServer((sock) => {
    open.add(sock)
    sock.on('close', () => open.delete(sock))
    sock.on('error', () => {})
    let buf = ''
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      let i
      while ((i = buf.indexOf('\r\n\r\n')) !== -1) {
        const head = buf.slice(0, i)
        buf = buf.slice(i + 4)
        heads.push(head)
        answer(sock, head, head.split(' ')[1]!)
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    heads,
    open,
    close: async () => {
      for (const s of open) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/** Send raw bytes to a port and collect the raw answer until the connection closes. */
export function rawExchange(port: number, text: string | Buffer, timeoutMs = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const t = setTimeout(() => {
      s.destroy()
      reject(new Error(`no end of response within ${timeoutMs} ms: ${Buffer.concat(chunks).toString('latin1')}`))
    }, timeoutMs)
    s.on('data', (d: Buffer) => chunks.push(d))
    s.on('error', () => {})
    s.on('close', () => {
      clearTimeout(t)
      resolve(Buffer.concat(chunks))
    })
    s.write(text)
  })
}
