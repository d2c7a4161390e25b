// Config push to real `igw proxy` processes: ACK, NACK that keeps the old config serving, usage
// reports that add up to the traffic sent, restart with the control plane down (boot from the
// signed last-known-good file), catch-up when it returns, a head that cannot start NACKed at
// boot, and a tampered file refused.
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ProxyFleet, runningVersion } from '../helpers/control-plane.ts'
import { spawnIgw, type SpawnedIgw } from '../helpers/proxy.ts'

const fleet = new ProxyFleet('push')
const stateDir = join(fleet.work, 'state')

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const t0 = Date.now()
  for (;;) {
    const v = await fn().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

// Two workers where a push must reach every worker (the first proxy, tests 1-3); the restarts
// after it are about the last-known-good file, which one worker boots from as two do, at half the
// start-up CPU.
const startIgwProxy = (extraArgs: string[] = [], workers = 2) => fleet.proxy('e2e-1', stateDir, { workers, extraArgs, usageIntervalMs: 200 })

// `connection: close`: no idle keep-alive connection left open, which a stopping proxy would hold
// its drain's idle grace for (1 s per stop).
const query = (p: SpawnedIgw, tenant = 'acme') =>
  fetch(`${p.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': tenant, connection: 'close' }, body: JSON.stringify({ query: '{ hello(name: "cp") }' }) })

const proxyView = () => fleet.row('e2e-1')

beforeAll(() => fleet.start())

afterAll(() => fleet.close())

describe('config push to real igw proxy processes', () => {
  let proxy: SpawnedIgw

  it('a proxy boots from the control plane head and ACKs it; later versions arrive and are ACKed', async () => {
    proxy = await startIgwProxy()
    expect((await query(proxy)).status).toBe(200)
    const head = fleet.cp!.store.head()!.version
    expect(await runningVersion(proxy)).toBe(head)
    await until('boot ACK', async () => ((await proxyView())?.appliedVersion === head ? true : undefined))
    // A new tenant: before the push the proxy refuses it (no default for this route), after it serves it.
    const put = await fleet.cp!.api('/v1/routes/graphql', { method: 'PUT', body: JSON.stringify({ upstream: 'backend', filters: [{ name: 'request-id' }, { name: 'tenant' }] }) })
    expect(put.status).toBe(200)
    const routeVersion = ((await put.json()) as { version: number }).version
    await until('ACK of the route change', async () => ((await proxyView())?.appliedVersion === routeVersion ? true : undefined))
    expect((await query(proxy, 'initech')).status).toBe(403)
    const t0 = performance.now()
    const created = await fleet.cp!.api('/v1/tenants/initech', { method: 'PUT', body: JSON.stringify({ tier: 'bronze' }) })
    const v = ((await created.json()) as { version: number }).version
    await until('ACK of the new version', async () => ((await proxyView())?.appliedVersion === v ? true : undefined))
    const ms = performance.now() - t0
    expect((await query(proxy, 'initech')).status).toBe(200)
    expect(await runningVersion(proxy)).toBe(v)
    console.log(`control plane → real proxy (2 workers) → ACK recorded: ${ms.toFixed(0)} ms`)
  })

  it('a version the proxy cannot build is NACKed with the error and the old config keeps serving', async () => {
    const before = await runningVersion(proxy)
    // Valid for the schema (so the control plane accepts it) but the key file does not exist on the proxy.
    const r = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({ jwt: { publicKeyFile: '/nonexistent/igw-test-key.pem' } }) })
    expect(r.status).toBe(200)
    const bad = ((await r.json()) as { version: number }).version
    const view = await until('NACK', async () => {
      const v = await proxyView()
      return v?.lastNack?.version === bad ? v : undefined
    })
    expect(view.lastNack!.error).toMatch(/igw-test-key\.pem/)
    expect(view.appliedVersion).toBe(before)
    expect(await runningVersion(proxy)).toBe(before)
    // Still serving with the previous config: no token needed, tenant from the header.
    expect((await query(proxy, 'initech')).status).toBe(200)
    // The operator fixes it: the next version is ACKed again.
    const fix = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({}) })
    const good = ((await fix.json()) as { version: number }).version
    await until('ACK after the fix', async () => ((await proxyView())?.appliedVersion === good ? true : undefined))
  })

  it('usage reports from the proxy add up to the traffic sent: statement totals and usedToday', async () => {
    await fleet.cp!.api('/v1/tenants/globex/quotas/graphql', { method: 'PUT', body: JSON.stringify({ limitPerDay: 1_000_000 }) })
    const before = ((await (await fleet.cp!.api('/v1/tenants/globex/statement')).json()) as { totals: { requests: number } }).totals.requests
    const N = 37
    for (let i = 0; i < N; i++) expect((await query(proxy, 'globex')).status).toBe(200)
    const refused = await query(proxy, 'nobody') // unknown tenant: refused, attributed to no tenant
    expect(refused.status).toBe(403)
    // An export route (opaque http): its response bytes are the tenant's bytesExported.
    const route = await fleet.cp!.api('/v1/routes/export', { method: 'PUT', body: JSON.stringify({ upstream: 'backend', type: 'http', match: { pathPrefix: '/export/' }, filters: [{ name: 'tenant' }] }) })
    const rv = ((await route.json()) as { version: number }).version
    await until('export route applied', async () => ((await runningVersion(proxy)) === rv ? true : undefined))
    const exp = await fetch(`${proxy.url}/export/entities.ndjson?count=20`, { headers: { 'x-tenant-id': 'globex', connection: 'close' } })
    expect(exp.status).toBe(200)
    const bodyBytes = Buffer.byteLength(await exp.text())
    const st = await until('statement totals', async () => {
      const s = (await (await fleet.cp!.api('/v1/tenants/globex/statement')).json()) as { totals: { requests: number; costUnits: number; bytesExported: number; byKind: Record<string, number> } }
      return s.totals.requests - before === N + 1 ? s : undefined
    })
    // Body plus the response head, no more.
    expect(st.totals.bytesExported).toBeGreaterThan(bodyBytes)
    expect(st.totals.bytesExported).toBeLessThan(bodyBytes + 1024)
    expect(st.totals.byKind.graphql).toBeGreaterThanOrEqual(N)
    const q = (await (await fleet.cp!.api('/v1/tenants/globex/quotas')).json()) as { items: { kind: string; usedToday: number }[] }
    expect(q.items.find((i) => i.kind === 'graphql')!.usedToday).toBe(st.totals.byKind.graphql)
    // Nothing more arrives later (no double counting across report intervals).
    await new Promise((r) => setTimeout(r, 600))
    const again = (await (await fleet.cp!.api('/v1/tenants/globex/statement')).json()) as { totals: { requests: number } }
    expect(again.totals.requests - before).toBe(N + 1)
  })

  it('restarted while the control plane is down, the proxy boots from the signed last-known-good file; it catches up when the control plane returns', async () => {
    const last = await runningVersion(proxy)
    await proxy.stop()
    await fleet.stopCp()
    const t0 = performance.now()
    const restarted = await startIgwProxy([], 1)
    const bootMs = performance.now() - t0
    expect(restarted.output.join('\n')).toMatch(/booting from the last-known-good snapshot/)
    expect(await runningVersion(restarted)).toBe(last)
    expect((await query(restarted, 'initech')).status).toBe(200)
    console.log(`proxy restart with the control plane down → serving from last-known-good: ${bootMs.toFixed(0)} ms`)
    // The control plane comes back on the same address; a change made there reaches the proxy.
    await fleet.startCp()
    const r = await fleet.cp!.api('/v1/tenants/hooli', { method: 'PUT', body: JSON.stringify({ tier: 'gold' }) })
    const v = ((await r.json()) as { version: number }).version
    await until('catch-up', async () => ((await runningVersion(restarted)) === v ? true : undefined))
    expect((await query(restarted, 'hooli')).status).toBe(200)
    await restarted.stop()
    proxy = restarted
  })

  it('a head that validates but cannot start here is NACKed at boot; the proxy starts from its last-known-good, which stays untouched', async () => {
    const path = join(stateDir, 'last-good.json')
    const lkgBefore = readFileSync(path, 'utf8')
    const lastGood = (JSON.parse(JSON.parse(lkgBefore).payload as string) as { version: number }).version
    // Accepted by the control plane (schema-valid) while no proxy is connected.
    const r = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({ jwt: { publicKeyFile: '/nonexistent/igw-boot-key.pem' } }) })
    const bad = ((await r.json()) as { version: number }).version
    expect(bad).toBeGreaterThan(lastGood)
    const p = await startIgwProxy([], 1)
    expect(p.output.join('\n')).toMatch(/control plane head failed to start here; NACKed/)
    expect(await runningVersion(p)).toBe(lastGood)
    expect((await query(p, 'hooli')).status).toBe(200)
    const view = await until('boot NACK', async () => {
      const v = await proxyView()
      return v?.lastNack?.version === bad ? v : undefined
    })
    expect(view.lastNack!.error).toMatch(/igw-boot-key\.pem/)
    // The snapshot a restart falls back to is still the good one.
    expect(readFileSync(path, 'utf8')).toBe(lkgBefore)
    // The fix reaches the running proxy through the normal push.
    const fix = await fleet.cp!.api('/v1/routes/graphql/filters/tenant', { method: 'PUT', body: JSON.stringify({}) })
    const good = ((await fix.json()) as { version: number }).version
    await until('ACK after the fix', async () => ((await proxyView())?.appliedVersion === good ? true : undefined))
    expect(await runningVersion(p)).toBe(good)
    expect(readFileSync(path, 'utf8')).not.toBe(lkgBefore)
    await p.stop()
  })

  it('a tampered last-known-good file is refused: with the control plane down the proxy will not start from it', async () => {
    await fleet.stopCp()
    const path = join(stateDir, 'last-good.json')
    const envelope = JSON.parse(readFileSync(path, 'utf8')) as { payload: string; signature: string }
    // Point the route somewhere else, keep the signature.
    const tampered = { ...envelope, payload: envelope.payload.replace(fleet.backendUrl, 'http://127.0.0.1:1') }
    expect(tampered.payload).not.toBe(envelope.payload)
    writeFileSync(path, JSON.stringify(tampered))
    const token = 'x'
    const err = await spawnIgw(['proxy', '--control-plane', fleet.cpUrl, '--control-plane-token', token, '--control-plane-key', fleet.keyFile, '--state-dir', stateDir, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1']).then(
      () => 'started',
      (e: Error) => e.message,
    )
    expect(err).toMatch(/exited with 78/)
    expect(err).toMatch(/refusing the last-known-good snapshot/)
    expect(err).toMatch(/signature does not verify/)
    // The untouched file is accepted again.
    writeFileSync(path, JSON.stringify(envelope))
    const ok = await startIgwProxy([], 1)
    expect((await query(ok)).status).toBe(200)
    await ok.stop()
    await fleet.startCp()
  })
})
