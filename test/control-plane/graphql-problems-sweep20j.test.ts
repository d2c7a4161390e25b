// GraphQL setQuota refuses a bad argument with the same `problems` (the argument's path and why)
// as REST refuses the same value, as the store's validation errors already are.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

let cp: TestControlPlane
beforeAll(async () => {
  cp = await startTestControlPlane()
}, 60_000)
afterAll(async () => {
  await cp?.close()
})

type GqlError = { message: string; path?: string[]; extensions: { code: string; problems?: string[] } }

async function gqlErrors(query: string, token?: string): Promise<GqlError[]> {
  const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query }), ...(token ? { token } : {}) })
  return ((await r.json()) as { errors: GqlError[] }).errors
}

async function restProblems(path: string, body: unknown): Promise<string[]> {
  const r = await cp.api(path, { method: 'PUT', body: JSON.stringify(body) })
  expect(r.status).toBe(400)
  return ((await r.json()) as { problems: string[] }).problems
}

describe('setQuota argument refusals', () => {
  it('an unknown kind and a negative limit carry REST’s problems', async () => {
    const kind = await gqlErrors('mutation { setQuota(kind: "bogus", limitPerDay: 5, tenant: "acme") { kind } }')
    expect(kind).toEqual([expect.objectContaining({ path: ['setQuota'], extensions: { code: 'BAD_USER_INPUT', problems: await restProblems('/v1/tenants/acme/quotas/bogus', { limitPerDay: 5 }) } })])

    const negative = await gqlErrors('mutation { setQuota(kind: "graphql", limitPerDay: -1, tenant: "acme") { kind } }')
    expect(negative).toEqual([expect.objectContaining({ path: ['setQuota'], extensions: { code: 'BAD_USER_INPUT', problems: await restProblems('/v1/tenants/acme/quotas/graphql', { limitPerDay: -1 }) } })])
  })

  it('no tenant (no argument, no tenant claim) names the tenant argument', async () => {
    const errors = await gqlErrors('{ quotas { kind } }')
    expect(errors).toEqual([expect.objectContaining({ path: ['quotas'], extensions: { code: 'BAD_USER_INPUT', problems: [expect.stringMatching(/^tenant: /)] } })])
  })

  it('a lone surrogate in an argument names that argument', async () => {
    const r = await cp.api('/graphql', { method: 'POST', body: JSON.stringify({ query: 'query($t: String) { quotas(tenant: $t) { kind } }', variables: { t: 'a\ud800' } }) })
    const errors = ((await r.json()) as { errors: GqlError[] }).errors
    expect(errors).toEqual([expect.objectContaining({ extensions: { code: 'BAD_USER_INPUT', problems: [expect.stringMatching(/^tenant: .*Unicode/)] } })])
  })
})
