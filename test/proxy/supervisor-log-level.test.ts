// The supervisor's own log lines follow a reloaded log.level, as the workers' do: a proxy
// started silent and reloaded to warn reports its warnings; reloaded to silent, it says nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConfig } from '../../config/load.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

const DOC = { routes: [{ name: 'graphql', upstream: 'http://127.0.0.1:9' }] }
const doc = (level: string, keepAliveTimeoutMs = 65_000) =>
  validateConfig({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, workers: 1, log: { level }, listener: { keepAliveTimeoutMs }, ...DOC })

describe('supervisor log level on reload', () => {
  let proxy: TestProxy
  beforeAll(async () => {
    proxy = await startTestProxy({ ...DOC, log: { level: 'silent' } })
  })
  afterAll(async () => {
    await proxy?.close()
  })

  it('silent → warn: the next warning is written; warn → silent: nothing is', async () => {
    const restartWarning = () => proxy.logs.lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).includes('needs a restart')).length
    expect((await proxy.applyConfig(doc('silent', 1_000))).ok).toBe(true)
    expect(restartWarning()).toBe(0) // silent: the warning about listener was not written
    expect((await proxy.applyConfig(doc('warn'))).ok).toBe(true)
    expect((await proxy.applyConfig(doc('warn', 2_000))).ok).toBe(true)
    expect(restartWarning()).toBe(1)
    expect(proxy.logs.find('config applied').length).toBeGreaterThan(0) // lifecycle lines at warn too
    const before = proxy.logs.lines.length
    expect((await proxy.applyConfig(doc('silent', 3_000))).ok).toBe(true)
    expect((await proxy.applyConfig(doc('silent', 4_000))).ok).toBe(true)
    // the first of these was decided under warn (its warning is written), then nothing at all
    expect(proxy.logs.lines.slice(before).filter((l) => l.component === 'supervisor').map((l) => l.msg)).toEqual(['config change of "listener" needs a restart; the running value stays'])
  })
})
