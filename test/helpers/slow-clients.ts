// Raw TCP clients that read a response slowly or not at all, for the response-watch tests
// (bodyIdleMs: a client that stops reading is cut, a slow but moving one is not).
import { connect, type Socket } from 'node:net'
import type { Registry } from 'prom-client'

export interface PausedClient {
  socket: Socket
  /** Bytes read, the first response's head included. */
  got: () => number
  /** The length of the first response's head (0 until it is in). */
  head: () => number
  /** The last 4 KiB read. */
  text: () => string
  closed: Promise<void>
}

/** Sends `GET path` to 127.0.0.1:`port` and reads nothing until resumed; destroyed by `cleanups`. */
export async function pausedGet(port: number, path: string, cleanups: (() => unknown)[]): Promise<PausedClient> {
  const socket = connect(port, '127.0.0.1')
  cleanups.push(() => socket.destroy())
  socket.on('error', () => undefined)
  let got = 0
  let head = 0
  let first = ''
  let tail = ''
  socket.on('data', (c: Buffer) => {
    got += c.length
    tail = (tail + c.toString('latin1')).slice(-4096)
    if (head !== 0 || first.length >= 4096) return
    first += c.toString('latin1', 0, 4096)
    const end = first.indexOf('\r\n\r\n')
    if (end !== -1) head = end + 4
  })
  socket.pause()
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  await new Promise<void>((r) => socket.once('connect', () => r()))
  socket.write(`GET ${path} HTTP/1.1\r\nhost: x\r\n\r\n`)
  return { socket, got: () => got, head: () => head, text: () => tail, closed }
}

/**
 * Has the client read about `quota` bytes every `everyMs` and nothing in between. The returned
 * stop() lets it read freely from then on: the pacing is one interval and one listener, both gone
 * at once (a pause timer of its own could still fire after the last resume).
 */
export function pace(c: PausedClient, quota: number, everyMs: number, cleanups: (() => unknown)[]): () => void {
  let left = 0
  const onData = (chunk: Buffer): void => {
    if ((left -= chunk.length) <= 0) c.socket.pause()
  }
  c.socket.on('data', onData)
  const beat = setInterval(() => {
    left = quota
    c.socket.resume()
  }, everyMs)
  const stop = (): void => {
    clearInterval(beat)
    c.socket.off('data', onData)
    c.socket.resume()
  }
  cleanups.push(stop)
  return stop
}

/** The sum of a metric's series whose labels include `labels`. */
export async function metricTotal(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)!.get()
  return m.values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0)
}

/** Resolves with `p`, or rejects once `ms` passed without it. */
export const closedWithin = (p: Promise<void>, ms: number): Promise<unknown> => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms))])
