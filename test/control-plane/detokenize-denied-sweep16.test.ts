// A refused attempt to reveal tokenized values is a security event: it is audited (who, why it
// was refused, the justification given) like a granted one, against a real control plane.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

type Entry = { actor: string; action: string; resource: string; after: { reason?: string; justification?: string | null; tokens?: unknown } | null }

describe('refused detokenize calls are audited', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  async function entries(): Promise<Entry[]> {
    const r = await cp.api('/v1/audit?limit=1000')
    expect(r.status).toBe(200)
    return ((await r.json()) as { items: Entry[] }).items.filter((e) => e.action.startsWith('dlp.detokenize'))
  }

  it('a role without the right and an officer without a justification each leave an entry naming actor and reason, never the tokens', async () => {
    const operator = await cp.token({ sub: 'olga', roles: ['operator'] })
    const denied = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: JSON.stringify({ tokens: ['tok_email_k1_secretish'] }), token: operator, headers: { 'x-justification': 'curious' } })
    expect(denied.status).toBe(403)
    const officer = await cp.token({ sub: 'dora', roles: ['dlp-officer'] })
    const unjustified = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: JSON.stringify({ tokens: ['tok_email_k1_secretish'] }), token: officer })
    expect(unjustified.status).toBe(403)
    const got = await entries()
    const olga = got.find((e) => e.actor === 'olga')
    expect(olga).toMatchObject({ action: 'dlp.detokenize.denied', resource: 'dlp/tokens', after: { justification: 'curious' } })
    expect(olga!.after!.reason).toMatch(/dlp\.detokenize .*denied/)
    const dora = got.find((e) => e.actor === 'dora')
    expect(dora).toMatchObject({ action: 'dlp.detokenize.denied', after: { justification: null } })
    expect(dora!.after!.reason).toMatch(/justification/)
    expect(JSON.stringify(got)).not.toContain('secretish')
    // Repeated within the minute: refused every time, audited once per actor.
    for (let i = 0; i < 5; i++) expect((await cp.api('/v1/dlp/detokenize', { method: 'POST', body: JSON.stringify({ tokens: ['x'] }), token: operator })).status).toBe(403)
    expect((await entries()).filter((e) => e.actor === 'olga')).toHaveLength(1)
    // The chain still verifies with the new entries in it.
    expect(((await (await cp.api('/v1/audit/verify')).json()) as { ok: boolean }).ok).toBe(true)
  })

  it('a missing or bad token (401) is not an audited actor', async () => {
    const before = (await entries()).length
    const r = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: JSON.stringify({ tokens: ['x'] }), token: 'not-a-jwt' })
    expect(r.status).toBe(401)
    expect((await entries()).length).toBe(before)
  })
})
