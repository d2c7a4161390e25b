// igw_config_digest_info{digest}: whether two proxies run the same config, whatever version
// number each gave it (in file mode each pod numbers its own reloads, so a pod started after an
// edit runs the same document as the others under version 1; IgwConfigVersionSkew uses this).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestProxy, testProxyConfig, type TestProxy } from '../helpers/proxy.ts'

const DOC = { tenants: { acme: {} }, routes: [{ name: 'graphql', upstream: 'http://127.0.0.1:9', filters: [{ name: 'tenant' }] as never }] }

function digests(text: string): string[] {
  return [...text.matchAll(/^igw_config_digest_info\{digest="([0-9a-f]+)"\} 1$/gm)].map((m) => m[1]!)
}

describe('config digest metric', () => {
  let a: TestProxy
  let b: TestProxy
  beforeAll(async () => {
    a = await startTestProxy(DOC)
    b = await startTestProxy(DOC)
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
  })

  it('equal configs under different versions: one digest each, the same; a changed config: another; back again: the first', async () => {
    const first = digests(await a.metricsText())
    expect(first).toHaveLength(1)
    const doc = testProxyConfig(DOC)
    expect((await b.applyConfig(doc, 7)).ok).toBe(true) // same document, version 7
    expect(b.version()).toBe(7)
    expect(digests(await b.metricsText())).toEqual(first)

    const changed = testProxyConfig({ ...DOC, tenants: { acme: {}, globex: {} } })
    expect((await b.applyConfig(changed)).ok).toBe(true)
    const second = digests(await b.metricsText())
    expect(second).toHaveLength(1) // the old series is gone, not left beside the new one
    expect(second).not.toEqual(first)
    expect((await b.applyConfig(doc)).ok).toBe(true)
    expect(digests(await b.metricsText())).toEqual(first)
  })
})
