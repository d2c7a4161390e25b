// POST /v1/policies/admin/decide never checked its body: `{}`, `null` or a subject that is not an
// object were answered 200 {allow: false, reason: 'unknown action "undefined"'} — a dry run of
// nothing that read like the policy's verdict. The published DecideInput requires subject, action
// and resource: anything else is a 400 problem naming each missing or wrong field.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

describe('POST /v1/policies/admin/decide validates its body', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })
  const decide = (body: unknown) => cp.api('/v1/policies/admin/decide', { method: 'POST', body: JSON.stringify(body) })

  it.each([
    [{}, ['subject', 'action', 'resource']],
    [null, ['(body)']],
    [{ subject: 1, action: 'admin.write', resource: { type: 'routes' } }, ['subject']],
    [{ subject: { sub: 'x', roles: ['viewer'] }, action: '', resource: { type: 'routes' } }, ['action']],
    [{ subject: { sub: 'x', roles: ['viewer'] }, action: 'admin.write', resource: 'routes', context: [] }, ['resource', 'context']],
  ])('%j → 400 naming %j', async (body, fields) => {
    const r = await decide(body)
    expect(r.status).toBe(400)
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/)
    const p = (await r.json()) as { problems: string[] }
    expect(p.problems.map((x) => x.split(':')[0])).toEqual(fields)
  })

  it('a complete request is still decided', async () => {
    const r = await decide({ subject: { sub: 'x', roles: ['viewer'] }, action: 'admin.write', resource: { type: 'routes' } })
    expect(r.status).toBe(200)
    expect(await r.json()).toEqual({ allow: false, reason: 'subject lacks the "admin.write" attribute' })
  })
})
