// A policy bundle without the entrypoint its user evaluates is refused when it is loaded: the DLP
// filter's `dlp.policy.entrypoint` (a typo, or the admin bundle named by mistake) stops the
// config, instead of starting and then denying every export with an error line per request; the
// control plane's Authorizer refuses a bundle without the admin decision.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { Authorizer } from '../../control-plane/auth.ts'
import { startTestProxy } from '../helpers/proxy.ts'

const dlpDoc = (policy: Record<string, unknown>) => ({
  mode: 'ingress' as const,
  tenants: { acme: {} },
  dlp: { keyring: { file: join(mkdtempSync(join(tmpdir(), 'igw-ep-')), 'keyring.json') }, policy },
  routes: [{ name: 'raw', match: { pathPrefix: '/' }, upstream: 'http://127.0.0.1:9', type: 'http' as const, filters: [{ name: 'tenant' }, { name: 'dlp', preset: 'tokenize_strict', exports: { paths: [{ prefix: '/export/' }] } }] as never }],
})

describe('policy entrypoints are checked at load', () => {
  it('a DLP entrypoint the bundle lacks stops the start, naming it; the default one starts', async () => {
    await expect(startTestProxy(dlpDoc({ entrypoint: 'intelgraph/dlp/decisoin' }))).rejects.toThrow(/intelgraph\/dlp\/decisoin/)
    await expect(startTestProxy(dlpDoc({ bundle: 'admin' }))).rejects.toThrow(/intelgraph\/dlp\/decision/)
    const ok = await startTestProxy(dlpDoc({}))
    await ok.close()
  })

  it('the Authorizer refuses a bundle without the admin decision and loads the admin one', async () => {
    await expect(Authorizer.load('dlp')).rejects.toThrow(/intelgraph\/admin\/decision/)
    const a = await Authorizer.load()
    expect(a.decide({ sub: 'x', roles: ['admin'], attributes: [] }, 'admin.read', { type: 'config' }).allow).toBe(true)
  })
})
