// endRaw's lingering close counts its LINGER_MS as Envoy's delayed close does: from the moment the
// reply is all written, restarted while a slow reader still takes it in. Counted from end(), a
// reply still queued when the timer fired was cut short. The client is python (node cannot shrink
// a TCP socket's buffers): a small receive buffer and MSS keep the kernels from absorbing the reply.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { endRaw, LINGER_MS } from '../../proxy/linger.ts'
import { waitUntil } from '../helpers/wait.ts'

const REPLY = 2 * 1024 * 1024
// The slow reader pauses this long twice, taking 64 KiB in between: under LINGER_MS each time,
// past it in all.
const PAUSE_S = 2

const CLIENT = `
import socket, sys, time
port, pause = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
s.connect(('127.0.0.1', port))
n = 0
if pause == 0:
    sys.stdin.read()  # never reads the reply
else:
    try:
        time.sleep(pause)
        while n < 65536:
            n += len(s.recv(65536 - n))
        time.sleep(pause)
        while True:
            d = s.recv(65536)
            if not d:
                break
            n += len(d)
    except OSError:
        pass
print(n, flush=True)
`

let server: Server | undefined
const children: ChildProcess[] = []

afterEach(async () => {
  for (const c of children.splice(0)) c.kill()
  if (server) await new Promise((r) => server!.close(r))
  server = undefined
})

async function serve(onSocket: (s: Socket) => void): Promise<number> {
  server = createServer((s) => {
    s.on('error', () => undefined)
    onSocket(s)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return (server.address() as { port: number }).port
}

function client(port: number, pause: number): { received: Promise<number> } {
  const py = spawn('python3', ['-c', CLIENT, String(port), String(pause)], { stdio: ['pipe', 'pipe', 'inherit'] })
  children.push(py)
  let out = ''
  py.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  return { received: once(py, 'exit').then(() => Number(out.trim())) }
}

describe('endRaw to a slow reader', () => {
  it('delivers the whole reply to a reader that keeps taking it, and still cuts one that stopped', async () => {
    const reply = Buffer.alloc(REPLY, 0x61)
    const sockets: Socket[] = []
    const port = await serve((s) => {
      sockets.push(s)
      endRaw(s, reply)
    })
    const t0 = Date.now()
    const slow = client(port, PAUSE_S)
    const stalled = client(port, 0)
    await waitUntil(() => sockets.length === 2, 5_000, 'both clients connected')
    expect(await slow.received).toBe(REPLY)
    expect(Date.now() - t0).toBeGreaterThan(LINGER_MS) // the reader took longer than the linger
    // The reader that never reads holds its socket only LINGER_MS past its last progress.
    await waitUntil(() => sockets.every((s) => s.destroyed), LINGER_MS, 'stalled socket cut')
  }, 15_000)
})
