// `igw demo` bound its gateway and admin port to every interface (`:8080`, `:9901`) while its
// backend and control plane stayed on loopback and the banner printed 127.0.0.1: a laptop running
// the demo offered the sample backend's mutations and the admin /config to its network. With no
// --listen/--admin-listen it now listens on 127.0.0.1 only (as Apollo Router's default).
import { connect } from 'node:net'
import { networkInterfaces } from 'node:os'
import { expect, it } from 'vitest'
import { spawnIgw } from '../helpers/proxy.ts'

/** Does a TCP connect to host:port succeed? */
function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 2_000 })
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
    s.once('timeout', () => (s.destroy(), resolve(false)))
  })
}

it('the demo gateway and admin listen on loopback unless told otherwise', async () => {
  const demo = await spawnIgw(['demo', '--workers', '1'], { IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0', IGW_LISTEN: '', IGW_ADMIN_LISTEN: '' })
  try {
    const line = JSON.parse(demo.output.find((l) => l.includes('"igw proxy listening"'))!) as { listen: string; admin: string }
    expect([line.listen, line.admin]).toEqual(['127.0.0.1:8080', '127.0.0.1:9901'])
    expect(await reachable('127.0.0.1', 8080)).toBe(true)
    // This machine's other addresses do not reach it.
    const others = Object.values(networkInterfaces()).flatMap((a) => a ?? []).filter((a) => !a.internal && a.family === 'IPv4')
    for (const a of others) {
      expect(await reachable(a.address, 8080), a.address).toBe(false)
      expect(await reachable(a.address, 9901), a.address).toBe(false)
    }
  } finally {
    await demo.stop()
  }
})
