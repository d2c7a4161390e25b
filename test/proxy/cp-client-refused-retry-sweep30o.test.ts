// A pushed config version the workers could not build because a file it names is not on the
// proxy's host yet (in Kubernetes the Secret with the key syncs on its own, often after the
// commit), sweep 30o. It was NACKed once and never tried again while the stream stayed up: the
// proxy ran the old version until the next commit, though the file had long appeared (a refused
// file reload is retried). Same for a head that failed to start at boot. Real control plane
// (SQLite), real `igw proxy` processes.
import { generateKeyPairSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ProxyFleet, runningVersion } from '../helpers/control-plane.ts'
import { waitUntil } from '../helpers/wait.ts'

const fleet = new ProxyFleet('cp30o-retry')
beforeAll(async () => {
  await fleet.start()
})
afterAll(() => fleet.close())

it('a version refused for a missing file applies once the file appears, on a running proxy and on one that booted past it', async () => {
  const running = await fleet.proxy('retry-run', join(fleet.work, 'run'))
  await waitUntil(async () => (await fleet.row('retry-run'))?.appliedVersion === 1, 10_000, 'the boot ACK')
  const keyPath = join(fleet.work, 'jwt.pem')
  const r = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({ jwt: { algorithms: ['EdDSA'], publicKeyFile: keyPath } }) })
  expect(r.status).toBe(200)
  const v = ((await r.json()) as { version: number }).version
  // A proxy starting now: the head fails to start, it falls back to --upstream.
  const [booted] = await Promise.all([fleet.proxy('retry-boot', join(fleet.work, 'boot'), { extraArgs: ['--upstream', fleet.backendUrl] }), waitUntil(async () => (await fleet.row('retry-run'))?.lastNack?.version === v, 10_000, 'the NACK')])
  expect(booted.output.join('\n')).toMatch(/control plane head failed to start here; NACKed/)
  expect(await runningVersion(running)).toBe(1)
  expect(await runningVersion(booted)).not.toBe(v)
  // The Secret arrives; nothing is committed.
  writeFileSync(keyPath, generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }) as string)
  await expect.poll(() => runningVersion(running), { timeout: 10_000, interval: 100 }).toBe(v)
  await expect.poll(() => runningVersion(booted), { timeout: 10_000, interval: 100 }).toBe(v)
  for (const id of ['retry-run', 'retry-boot']) {
    await expect.poll(async () => fleet.row(id), { timeout: 5_000, interval: 100 }).toMatchObject({ appliedVersion: v, lastNack: null })
  }
  expect(running.output.join('\n')).toMatch(/config version will be tried again: a worker could not build it/)
}, 30_000)
