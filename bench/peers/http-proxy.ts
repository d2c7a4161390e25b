// Peer baseline: node-http-proxy as a competent user runs it (keep-alive agent, xfwd).
// `agent: keepAlive` matters: its default opens a new upstream connection per request.
import { Agent, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import httpProxy from 'http-proxy'

const target = process.argv[2]!
const keepAlive = process.argv[3] !== 'no-keepalive'
const proxy = httpProxy.createProxyServer({ target, xfwd: true, ...(keepAlive ? { agent: new Agent({ keepAlive: true, maxSockets: 128 }) } : {}) })
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502)
  res.end()
})
const server = createServer((req, res) => proxy.web(req, res))
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as AddressInfo).port}`))
process.on('SIGTERM', () => process.exit(0))
