// The in-cluster Redis (deploy/k8s/redis) runs with an append-only file: every AOF rewrite forks,
// and the child's copy-on-write pages count against the container's memory limit. With
// `maxmemory 384mb` in a 512Mi container, a rewrite under the quota counters' steady writes had
// 128 MiB for the copied pages plus client and rewrite buffers: an OOM kill at the worst moment
// (Redis's own guidance: leave room for up to the data set again while persisting). The args are
// run here by the real redis-server, which must take them, and the limit read back from it.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { freePort } from '../helpers/ports.ts'
import { ROOT } from '../helpers/proxy.ts'
import { waitUntil } from '../helpers/wait.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

type StatefulSet = KubeObject & { spec: { template: { spec: { containers: { name: string; args: string[]; resources: { limits: { memory: string } } }[] } } } }

const MI = 1024 * 1024
const quantity = (q: string) => {
  const m = /^(\d+)(Mi|Gi)$/.exec(q)
  if (!m) throw new Error(`unexpected memory quantity ${q}`)
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 * MI : MI)
}

describe('deploy/k8s/redis', () => {
  it('redis-server takes its args, keeps noeviction, and leaves half the container for a rewrite fork', async () => {
    const objs = renderKustomize(join(ROOT, 'deploy/k8s/overlays/ingress'))
    const sts = objs.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'igw-redis') as StatefulSet
    const c = sts.spec.template.spec.containers.find((x) => x.name === 'redis')!
    const limit = quantity(c.resources.limits.memory)
    const dir = mkdtempSync(join(tmpdir(), 'igw-k8s-redis-'))
    const port = await freePort()
    const [bin, ...args] = c.args.map((a) => (a === '/data' ? dir : a))
    expect(bin).toBe('redis-server')
    const child = spawn('redis-server', [...args, '--port', String(port), '--bind', '127.0.0.1', '--save', ''], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d))
    child.stderr.on('data', (d: Buffer) => (out += d))
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    client.on('error', () => {}) // refused while the server starts: retried by waitUntil
    try {
      await waitUntil(async () => {
        if (child.exitCode !== null) throw new Error(`redis-server refused the manifest's args:\n${out}`)
        try {
          await client.connect()
          return true
        } catch {
          client.disconnect()
          return false
        }
      }, 10_000)
      const [, maxmemory] = (await client.config('GET', 'maxmemory')) as [string, string]
      const [, policy] = (await client.config('GET', 'maxmemory-policy')) as [string, string]
      const [, aof] = (await client.config('GET', 'appendonly')) as [string, string]
      expect(policy).toBe('noeviction')
      expect(aof).toBe('yes')
      expect(Number(maxmemory)).toBeGreaterThan(0)
      expect(Number(maxmemory)).toBeLessThanOrEqual(limit / 2)
    } finally {
      client.disconnect()
      child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
