// A request target starting with "//" (a script joining a base URL ending in "/" with "/v1/…") was
// resolved as a network-path reference: host "v1", path "/config" — answered "no endpoint GET
// /config", naming a path the client never sent (and `//v1/config/versions` an endpoint it did not ask).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
})
afterAll(async () => {
  await cp?.close()
})

describe('request targets starting with // (sweep 31h)', () => {
  it('are paths: a 404 names the path the client sent', async () => {
    for (const path of ['//v1/config', '//v1/config/versions']) {
      const res = await cp.api(path)
      expect(res.status).toBe(404)
      expect(JSON.stringify(await res.json())).toContain(`no endpoint GET ${path} `)
    }
  })

  it('(guard) the same endpoint with one slash answers', async () => {
    expect((await cp.api('/v1/config')).status).toBe(200)
  })
})
