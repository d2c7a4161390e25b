// Every token of a detokenize call is written to the audit log (and again in `errors` when it
// fails). A granted caller sending one 3 MiB junk "token" put ~6 MiB into a single audit entry
// (the body cap is 4 MiB); no token the tokenizer makes is longer than 16,384 characters, so such
// a call is a 400 naming the token, and nothing is audited or revealed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'

describe('detokenize: oversized tokens', () => {
  let cp: TestControlPlane
  beforeAll(async () => {
    cp = await startTestControlPlane()
  })
  afterAll(async () => {
    await cp?.close()
  })

  const auditCount = async () => {
    const r = await cp.api('/v1/audit?limit=1000')
    expect(r.status).toBe(200)
    return ((await r.json()) as { items: { action: string }[] }).items.length
  }

  it('a token longer than any the tokenizer makes is a 400 naming it; the audit log is untouched', async () => {
    const officer = await cp.token({ sub: 'dora', roles: ['dlp-officer'] })
    const before = await auditCount()
    const tokens = ['tok_email_k1_short', `tok_email_k1_${'A'.repeat(3 * 1024 * 1024)}`]
    const r = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: JSON.stringify({ tokens }), token: officer, headers: { 'x-justification': 'INC-42 customer request' } })
    const text = await r.text()
    expect(r.status, text.slice(0, 300)).toBe(400)
    expect(text).toContain('tokens[1]')
    expect(text).toContain('16384')
    expect(await auditCount()).toBe(before)
    // a token at the bound is still taken to the tokenizer (whatever it answers, not this 400)
    const ok = await cp.api('/v1/dlp/detokenize', { method: 'POST', body: JSON.stringify({ tokens: [`tok_${'A'.repeat(16_380)}`] }), token: officer, headers: { 'x-justification': 'INC-42 customer request' } })
    expect(await ok.text()).not.toContain('not a DLP token')
  })
})
