// Persisted filter sweep 20g: Hive app-deployment ids. Hive names a persisted document
// `<app>~<version>~<hash>` and its clients send that as `documentId`; the manifest refused any id
// with "~", so a manifest exported from Hive could not be loaded (and those clients got
// PERSISTED_QUERY_NOT_FOUND). Through a real proxy and a node:http backend that records the body.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'undici'
import { validateConfig } from '../../../config/load.ts'
import { startRecordingBackend, type RawBackend } from '../../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

const ID = 'web-app~1.4.2~3f1c9a0e2b'
const DOC = 'query Hello { hello }'

describe('persisted filter sweep 20g: Hive document ids', () => {
  let backend: RawBackend
  let proxy: TestProxy
  const bodies: string[] = []
  beforeAll(async () => {
    backend = await startRecordingBackend(bodies, () => '{"data":{"hello":"world"}}')
    proxy = await startTestProxy({
      tenants: { acme: {} },
      persistedDocuments: { operations: { [ID]: { document: DOC, costUnits: 3 } } },
      routes: [{ name: 'g', upstream: backend.url, filters: [{ name: 'tenant', defaultTenant: 'acme' }, { name: 'persisted', safelist: { mode: 'enforce' } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('a manifest with "~" in its ids loads; other characters are still refused', () => {
    const ops = (id: string) => ({ routes: [{ name: 'r', upstream: 'http://127.0.0.1:1' }], persistedDocuments: { operations: { [id]: { document: DOC } } } })
    expect(() => validateConfig(ops(ID))).not.toThrow()
    expect(() => validateConfig(ops('web app 1'))).toThrow(/persistedDocuments\.operations\.web app 1/)
  })

  it('documentId "<app>~<version>~<hash>" runs the manifest document under enforce', async () => {
    const r = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ documentId: ID }) })
    expect(r.statusCode).toBe(200)
    expect(await r.body.json()).toEqual({ data: { hello: 'world' } })
    const sent = JSON.parse(bodies.at(-1)!) as { query: string; extensions: { costHints: { id: string; cost: number } } }
    expect(sent.query).toBe(DOC)
    expect(sent.extensions.costHints).toMatchObject({ id: ID, cost: 3 })
  })
})
