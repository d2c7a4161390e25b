// The ingress manifest's tenant JWT check, run as the rendered container runs: the config in
// deploy/k8s/ingress/igw.yaml verified signature and expiry only, so a token the identity provider
// minted for another service (another `aud`) or another issuer signing with a key in the same
// JWKS picked a tenant on the gateway. It now checks issuer and audience from the values layer.
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { ROOT } from '../helpers/proxy.ts'
import { startRedis, type TestRedis } from '../helpers/redis.ts'
import { waitUntil } from '../helpers/wait.ts'
import { runContainer, type RunContainer, type RunPod } from './kube-run.ts'
import { renderKustomize, type KubeObject } from './kustomize.ts'

type Workload = KubeObject & { spec: { template: { spec: RunPod & { containers: RunContainer[]; volumes?: { name: string; configMap?: { name: string } }[] } } } }
type ConfigMap = KubeObject & { data: Record<string, string> }
const LISTENING = /"listen":"[^"]*:(\d+)","admin":"[^"]*:(\d+)".*"msg":"igw proxy listening"/

describe('ingress manifest: tenant tokens', () => {
  let backend: DemoBackend
  let redis: TestRedis
  beforeAll(async () => {
    backend = await startDemoBackend()
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.close()
    await backend?.close()
  })

  it('takes a token of the configured issuer and audience only', async () => {
    const objs = renderKustomize(join(ROOT, 'deploy/k8s/overlays/ingress'))
    const d = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'igw') as Workload
    const pod = d.spec.template.spec
    const c = pod.containers[0]!
    const values = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('igw-values')) as ConfigMap
    const { JWT_ISSUER: issuer, JWT_AUDIENCE: audience } = values.data
    expect(issuer).toMatch(/^https:\/\//)
    expect(audience).toBeTruthy()
    // The operator's keys: the committed JWKS is an example whose private half nobody has.
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' })
    const jwksName = pod.volumes!.find((v) => v.name === 'jwks')!.configMap!.name
    const jwks = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === jwksName) as ConfigMap
    jwks.data['jwks.json'] = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k8s', alg: 'EdDSA', use: 'sig' }] })
    const token = (claims: { iss?: string; aud?: string }) => {
      const t = new SignJWT({ tenant_id: 'acme' }).setProtectedHeader({ alg: 'EdDSA', kid: 'k8s' }).setIssuedAt().setExpirationTime('10m')
      if (claims.iss !== undefined) t.setIssuer(claims.iss)
      if (claims.aud !== undefined) t.setAudience(claims.aud)
      return t.sign(privateKey)
    }
    const run = await runContainer(objs, pod, c, { IGW_LISTEN: '127.0.0.1:0', IGW_ADMIN_LISTEN: '127.0.0.1:0', GRAPH_UPSTREAM_URL: backend.url, IGW_REDIS: redis.url })
    try {
      const [, port, admin] = await run.waitFor(LISTENING)
      await waitUntil(async () => (await request(`http://127.0.0.1:${admin}/readyz`)).statusCode === 200)
      const ask = async (jwt: string) => {
        const r = await request(`http://127.0.0.1:${port}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${jwt}` }, body: '{"query":"{ hello }"}' })
        const body = (await r.body.json()) as { data?: unknown; errors?: { extensions: { code: string } }[] }
        return { status: r.statusCode, code: body.errors?.[0]?.extensions.code }
      }
      expect(await ask(await token({ iss: issuer, aud: audience }))).toEqual({ status: 200, code: undefined })
      // minted for another service
      expect(await ask(await token({ iss: issuer, aud: 'billing' }))).toEqual({ status: 401, code: 'UNAUTHENTICATED' })
      // another issuer signing with a key in this JWKS
      expect(await ask(await token({ iss: 'https://other.example.net/', aud: audience }))).toEqual({ status: 401, code: 'UNAUTHENTICATED' })
      // neither claim
      expect(await ask(await token({}))).toEqual({ status: 401, code: 'UNAUTHENTICATED' })
    } finally {
      expect(await run.stop(), run.output()).toBe(0)
    }
  })
})
