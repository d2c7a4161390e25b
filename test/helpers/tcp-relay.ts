// A plain TCP relay to a local port whose connections a test can cut (`cutAll`) or freeze
// (`frozen`: bytes are swallowed both ways while the connections stay open — a network partition).
import { connect, createServer, type Socket } from 'node:net'

export interface TcpRelay {
  readonly port: number
  /** While true, nothing is forwarded either way. */
  frozen: boolean
  /** Destroys every relayed connection, both sides. */
  cutAll(): void
  close(): Promise<void>
}

export async function startTcpRelay(targetPort: number): Promise<TcpRelay> {
  const sockets = new Set<Socket>()
  const state = { frozen: false }
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (d: Buffer) => void (state.frozen || upstream.write(d)))
    upstream.on('data', (d: Buffer) => void (state.frozen || client.write(d)))
    client.on('error', () => undefined)
    upstream.on('error', () => undefined)
    client.on('close', () => {
      sockets.delete(client)
      upstream.destroy()
    })
    upstream.on('close', () => {
      sockets.delete(upstream)
      client.destroy()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const cutAll = () => {
    for (const s of sockets) s.destroy()
  }
  return {
    port: (server.address() as { port: number }).port,
    get frozen() {
      return state.frozen
    },
    set frozen(v: boolean) {
      state.frozen = v
    },
    cutAll,
    close: async () => {
      cutAll()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
