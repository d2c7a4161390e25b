// Rotating subscriptions.cursorKey by a config reload (new key, the old one in
// previousCursorKeys) must take effect on the streams already flowing too: they kept the codec
// they were opened with, so they went on signing every cursor with the retired key for as long as
// they had clients (days, for a busy stream) — cursors that turn "invalid" everywhere once the old
// key leaves previousCursorKeys — and refused as "invalid" the cursors signed with the new key
// (by a restarted replica, another worker), replaying nothing of what they missed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../../config/load.ts'
import { CursorCodec } from '../../../proxy/subscriptions/cursor.ts'
import { startTestProxy, type TestProxy } from '../../helpers/proxy.ts'
import { startSubscriptionBackend, type SubscriptionBackend } from '../../helpers/subscription-backend.ts'
import { EVENTS, GqlClient, waitUntil } from './clients.ts'

const OLD = 'o'.repeat(48)
const NEW = 'n'.repeat(48)

describe('subscription hub: a cursorKey rotation reaches the streams already flowing', () => {
  let be: SubscriptionBackend
  let p: TestProxy
  const doc = (cursorKey: string, previousCursorKeys: string[]) => ({
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    workers: 1,
    subscriptions: { cursorKey, previousCursorKeys },
    routes: [{ name: 'gql', upstream: be.url, websocket: { mode: 'terminate' as const } }],
  })

  beforeAll(async () => {
    be = await startSubscriptionBackend()
    p = await startTestProxy(doc(OLD, []))
  })
  afterAll(async () => {
    await p?.close()
    await be?.close()
  })

  it('after the reload a live stream signs with the new key, and resumes clients from cursors signed with either', async () => {
    const url = `ws://127.0.0.1:${p.port}/graphql`
    const c = new GqlClient(url)
    const s = c.subscribe(EVENTS('rot'))
    await waitUntil(() => be.subscribes.filter((x) => x.channel === 'rot').length === 1)
    be.publish('rot')
    await s.received.wait((r) => r.events.length === 1)
    const oldCodec = new CursorCodec([OLD])
    const newCodec = new CursorCodec([NEW])
    const c1 = s.received.events[0]!.extensions!.cursor!
    expect(oldCodec.decode(c1)).toBeDefined()

    expect(await p.applyConfig(validateConfig(doc(NEW, [OLD])))).toMatchObject({ ok: true })
    be.publish('rot')
    be.publish('rot')
    await s.received.wait((r) => r.events.length === 3)
    const c2 = s.received.events[1]!.extensions!.cursor!
    // signed with the new key: it outlives the old key's retirement
    expect(newCodec.decode(c2)).toMatchObject({ offset: 2 })
    expect(oldCodec.decode(c2)).toBeUndefined()

    // a cursor signed with the new key elsewhere (a restarted replica, another worker) for this stream's position 1
    const pos = oldCodec.decode(c1)!
    const foreign = newCodec.encode(pos)
    const d = new GqlClient(url)
    const t = d.subscribe(EVENTS('rot'), { cursor: foreign })
    await t.received.wait((r) => r.events.length === 2, 5_000, 'the replay after position 1')
    expect(t.received.seqs).toEqual(s.received.seqs.slice(1))
    expect(t.received.gaps).toEqual([])
    // and the old key still verifies during the rotation
    const e = new GqlClient(url)
    const u = e.subscribe(EVENTS('rot'), { cursor: c1 })
    await u.received.wait((r) => r.events.length === 2, 5_000, 'the replay from the old-key cursor')
    expect(u.received.gaps).toEqual([])
    expect(s.received.gaps).toEqual([])
    await c.dispose()
    await d.dispose()
    await e.dispose()
  })
})
