// Rendered manifests, sweep 23z:
//  - overlays/ingress-managed puts igw behind a Service of type LoadBalancer: an L4 balancer that
//    sets no X-Forwarded-* itself. The config trusted incoming X-Forwarded-For/-Proto/-Host (as
//    behind an L7 balancer), so a client's forged ones reached every backend as the gateway's
//    word (client address, scheme, host). That overlay now runs igw as the HTTP edge
//    (FORWARDED_TRUST_INCOMING=false); the in-cluster ingress overlay (behind an ingress
//    controller) still relays them.
//  - the manifests' comments that name a worker's heap (resources.limits.memory) say what igw
//    derives from that limit (the sidecar's said 90 MB for 72).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { defaultWorkerOldGenerationMb } from '../../proxy/supervisor.ts'
import { echoHandler, startRawBackend, type RawBackend } from '../helpers/backends.ts'
import { ROOT } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'
import { runContainer, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

type Container = RunContainer & { resources?: { limits?: { memory?: string } } }
type Workload = KubeObject & { spec: { template: { spec: RunPod & { containers: Container[]; volumes?: { name: string; configMap?: { name: string } }[] } } } }
type ConfigMap = KubeObject & { data: Record<string, string> }
const LISTENING = /"listen":"[^"]*:(\d+)","admin":"[^"]*:(\d+)".*"msg":"igw proxy listening"/

describe('ingress overlays: X-Forwarded-* from the client', () => {
  let backend: RawBackend
  let redis: TestRedis
  beforeAll(async () => {
    backend = await startRawBackend(echoHandler)
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.close()
    await backend?.close()
  })

  /** What the backend receives for a request carrying forged X-Forwarded-*, through the overlay's rendered igw container. */
  async function forwardedAtBackend(overlay: string): Promise<{ objs: KubeObject[]; headers: Record<string, string> }> {
    const objs = renderKustomize(join(ROOT, 'deploy/k8s/overlays', overlay))
    const d = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'igw') as Workload
    const pod = d.spec.template.spec
    // The operator's keys: the committed JWKS is an example whose private half nobody has.
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
    const jwks = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === pod.volumes!.find((v) => v.name === 'jwks')!.configMap!.name) as ConfigMap
    jwks.data['jwks.json'] = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k8s', alg: 'EdDSA', use: 'sig' }] })
    const values = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('igw-values')) as ConfigMap
    const token = await new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k8s' }).setIssuer(values.data.JWT_ISSUER!).setAudience(values.data.JWT_AUDIENCE!).setIssuedAt().setExpirationTime('10m').sign(privateKey)
    const run = await runContainer(objs, pod, pod.containers[0]!, { IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0', GRAPH_UPSTREAM_URL: backend.url, IGW_REDIS: redis.url })
    try {
      const [, port, admin] = await run.waitFor(LISTENING)
      await waitUntil(async () => (await request(`http://127.0.0.1:${admin}/readyz`)).statusCode === 200)
      const r = await request(`http://127.0.0.1:${port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'admin.example.com' },
        body: '{"query":"mutation { hello }"}',
      })
      const body = (await r.body.json()) as { headers?: Record<string, string> }
      expect(r.statusCode, JSON.stringify(body)).toBe(200)
      return { objs, headers: body.headers! }
    } finally {
      await run.stop()
    }
  }

  it('ingress-managed (an L4 LoadBalancer in front): igw is the edge, the forged headers do not reach the backend', async () => {
    const { objs, headers } = await forwardedAtBackend('ingress-managed')
    expect(headers['x-forwarded-for']).toBe('127.0.0.1')
    expect(headers['x-forwarded-proto']).toBe('http')
    expect(headers['x-forwarded-host']).not.toBe('admin.example.com')
    // ...and the client's address is the one igw sees: no SNAT to a node's address on the way.
    const svc = objs.find((o) => o.kind === 'Service' && o.metadata.name === 'igw') as KubeObject & { spec: { type: string; externalTrafficPolicy?: string } }
    expect(svc.spec).toMatchObject({ type: 'LoadBalancer', externalTrafficPolicy: 'Local' })
  }, 20_000)

  it('ingress (behind an ingress controller, which sets them) still relays them', () => {
    const objs = renderKustomize(join(ROOT, 'deploy/k8s/overlays/ingress'))
    const values = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('igw-values')) as ConfigMap
    expect(values.data.FORWARDED_TRUST_INCOMING).toBe('true')
  })
})

describe('manifest comments on worker heaps', () => {
  it('name the heap igw derives from the container memory limit and worker count', () => {
    const young = validateConfig({ upstreams: { a: { url: 'http://127.0.0.1:1' } }, routes: [{ name: 'r', upstream: 'a' }] }).workerHeap.youngGenerationMb
    const cases = [
      { file: 'deploy/k8s/sidecar/deployment-patch.yaml', re: /(\d+)Mi with one worker gives it (\d+) MB/, workers: () => 1 },
      { file: 'deploy/k8s/ingress/deployment.yaml', re: /(\d+)Gi with IGW_WORKERS=(\d+) gives (\d+) MB per worker/, workers: (m: RegExpExecArray) => Number(m[2]) },
    ]
    for (const k of cases) {
      const m = k.re.exec(readFileSync(join(ROOT, k.file), 'utf8'))
      expect(m, k.file).not.toBeNull()
      const limit = Number(m![1]) * (k.file.includes('ingress') ? 2 ** 30 : 2 ** 20)
      expect(Number(m![m!.length - 1]), k.file).toBe(defaultWorkerOldGenerationMb(limit, k.workers(m!), young))
    }
  })
})
