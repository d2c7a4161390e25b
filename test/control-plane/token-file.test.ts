// `--control-plane-token-file`: the proxy reads its control plane token from a file again for
// every request, so a rotated token (a Kubernetes Secret mounted as a volume, a projected service
// account token) is picked up without a restart; a static --control-plane-token that expired
// would leave the proxy cut off from config pushes until someone restarts it.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../../control-plane/auth.ts'
import { connectedProxyArgs, ProxyFleet, runningVersion, TEST_AUTH_SECRET } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

describe('control plane token from a file', () => {
  const fleet = new ProxyFleet('token-file')
  const started: SpawnedIgw[] = []
  beforeAll(async () => {
    await fleet.start()
  })
  afterAll(async () => {
    for (const p of started) await p.stop()
    await fleet.close()
  })

  it('a token that does not verify is refused; the rotated one written into the file connects without a restart', async () => {
    const tokenFile = join(fleet.work, 'token')
    // Signed with another secret: the control plane answers 401.
    writeFileSync(tokenFile, `${await mintToken('another-secret-0123456789abcdef0123456789', { sub: 'proxy-rot', roles: ['proxy'] })}\n`)
    const stateDir = join(fleet.work, 'rot')
    mkdirSync(stateDir)
    const args = [...connectedProxyArgs({ cpUrl: fleet.cpUrl, keyFile: fleet.keyFile, stateDir, id: 'rot' }), '--control-plane-token-file', tokenFile, '--upstream', fleet.backendUrl]
    const proxy = await spawnIgw(args, { IGW_CONTROL_PLANE_TOKEN: '', IGW_USAGE_INTERVAL_MS: '60000' })
    started.push(proxy)
    expect(await runningVersion(proxy)).toBe(1) // the --upstream fallback: the control plane refused it
    expect(proxy.output.join('\n')).toMatch(/401/)
    expect((await fleet.row('rot'))?.connected ?? false).toBe(false)

    writeFileSync(tokenFile, `${await mintToken(TEST_AUTH_SECRET, { sub: 'proxy-rot', roles: ['proxy'] })}\n`)
    await expect.poll(async () => (await fleet.row('rot'))?.connected ?? false, { timeout: 30_000, interval: 200 }).toBe(true)
    const head = (await fleet.rows()).headVersion
    await expect.poll(() => runningVersion(proxy), { timeout: 10_000 }).toBe(head)
    // and it follows later changes with the same file
    const v = await fleet.commitTenant('rotated')
    await expect.poll(() => runningVersion(proxy), { timeout: 10_000 }).toBe(v)
  })

  it('an unreadable or empty token file, or both a token and a file, stop the start with the flag named', async () => {
    const base = connectedProxyArgs({ cpUrl: fleet.cpUrl, keyFile: fleet.keyFile, stateDir: join(fleet.work, 'bad'), id: 'bad' })
    const empty = join(fleet.work, 'empty-token')
    writeFileSync(empty, '\n')
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [['--control-plane-token-file', join(fleet.work, 'missing')], { IGW_CONTROL_PLANE_TOKEN: '' }, /--control-plane-token-file: invalid config\s+cannot read .*missing/],
      [['--control-plane-token-file', empty], { IGW_CONTROL_PLANE_TOKEN: '' }, /--control-plane-token-file: invalid config\s+.*empty-token: the file is empty/],
      [['--control-plane-token-file', empty, '--control-plane-token', 'x.y.z'], {}, /either --control-plane-token or --control-plane-token-file/],
    ]
    for (const [extra, env, message] of cases) {
      const err = await spawnIgw([...base, ...extra], env).then(
        async (p) => {
          await p.stop()
          return new Error('started')
        },
        (e: Error) => e,
      )
      expect(err.message, extra.join(' ')).toMatch(message)
    }
  })
})
