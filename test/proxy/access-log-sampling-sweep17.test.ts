// `log.access.sampleRate` applies to the lines of requests no route takes (a scanner trying
// hosts and paths, CONNECT) as to routed ones: they were written in full whatever the rate, so
// the noisiest traffic was the one not sampled. 5xx lines are always written, as for routed ones.
import { connect } from 'node:net'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../helpers/backends.ts'
import { startTestProxy, type TestProxy } from '../helpers/proxy.ts'

describe('access log sampling of unrouted requests', () => {
  let demo: DemoBackend
  let proxy: TestProxy
  beforeAll(async () => {
    demo = await startDemoBackend()
    proxy = await startTestProxy({ log: { level: 'info', access: { enabled: true, sampleRate: 0 } }, mode: 'ingress', routes: [{ name: 'api', match: { host: 'api.example.com' }, upstream: demo.url, type: 'http' }] } as never)
  })
  afterAll(async () => {
    await proxy?.close()
    await demo?.close()
  })

  it('sampleRate 0: no line for 30 unrouted requests and a CONNECT; the requests are still counted', async () => {
    for (let i = 0; i < 30; i++) {
      const r = await request(`${proxy.url}/probe-${i}`, { headers: { host: `scan-${i}.example.net` } })
      await r.body.dump()
      expect(r.statusCode).toBe(404)
    }
    await new Promise<void>((resolve, reject) => {
      const s = connect(proxy.port, '127.0.0.1', () => s.write('CONNECT example.net:443 HTTP/1.1\r\nHost: example.net:443\r\n\r\n'))
      s.on('data', () => s.end())
      s.on('close', () => resolve())
      s.on('error', reject)
    })
    const text = await proxy.metricsText()
    const total = [...text.matchAll(/^igw_requests_total\{[^}]*route=""[^}]*status="404"[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0)
    expect(total).toBeGreaterThanOrEqual(30)
    await new Promise((r) => setTimeout(r, 300))
    expect(proxy.logs.find('access (no route)')).toEqual([])
  })
})
