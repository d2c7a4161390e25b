// `igw demo` starts the control plane too, and its proxy takes the config from it: a change made
// through the printed control plane example reaches the running gateway, and the filters the
// demo prints examples for (cache, quota headers, DLP on exports) answer as printed.
import { describe, expect, it } from 'vitest'
import { spawnIgw } from '../helpers/proxy.ts'

describe('igw demo with its control plane', () => {
  it('prints working control plane examples and the demo proxy follows the control plane', async () => {
    const demo = await spawnIgw(['demo', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--workers', '1'], { IGW_DEMO_BACKEND: '127.0.0.1:0', IGW_DEMO_CONTROL_PLANE: '127.0.0.1:0' })
    try {
      const t0 = Date.now()
      while (!demo.output.join('').includes('Ctrl-C stops everything') && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 50))
      const text = demo.output.join('')
      const cpUrl = /control plane\s+(http:\/\/127\.0\.0\.1:\d+)\/openapi\.json/.exec(text)![1]!
      const token = /export IGW_TOKEN=(\S+)/.exec(text)![1]!
      const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
      const before = ((await (await fetch(`${demo.adminUrl}/config`)).json()) as { version: number }).version
      const put = await fetch(`${cpUrl}/v1/tenants/initech`, { method: 'PUT', headers: auth, body: '{"tier":"bronze"}' })
      expect(put.status).toBe(201)
      const { version } = (await put.json()) as { version: number }
      expect(version).toBe(before + 1)
      let cfg: { version: number; config: { tenants: Record<string, unknown> } } | undefined
      // Up to 15 s: the push, its signature check and every worker's rebuild, on a busy machine.
      for (const until = Date.now() + 15_000; Date.now() < until; ) {
        cfg = (await (await fetch(`${demo.adminUrl}/config`)).json()) as typeof cfg
        if (cfg!.version === version) break
        await new Promise((r) => setTimeout(r, 50))
      }
      expect(cfg!.version).toBe(version)
      expect(cfg!.config.tenants.initech).toMatchObject({ tier: 'bronze' })
      const proxies = (await (await fetch(`${cpUrl}/v1/proxies`, { headers: auth })).json()) as { items: { id: string; appliedVersion: number }[] }
      expect(proxies.items).toEqual([expect.objectContaining({ id: 'demo-proxy', appliedVersion: version })])
      const gw = await fetch(`${demo.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' })
      expect(await gw.json()).toEqual({ data: { hello: 'Hello, world!' } })

      // the printed filter examples do what their comments say
      const list = () => fetch(`${demo.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'acme' }, body: '{"query":"{ entities(first: 3) { id name } }"}' })
      const miss = await list()
      expect([miss.headers.get('x-cache'), miss.headers.get('ratelimit-policy')]).toEqual(['MISS', expect.stringContaining('"rate";q=30')])
      expect((await list()).headers.get('x-cache')).toBe('HIT')
      const ndjson = await (await fetch(`${demo.url}/export/entities.ndjson?count=3`)).text()
      const rec = JSON.parse(ndjson.split('\n')[0]!) as { email: string; phone: string; ssn: string }
      expect(rec.email).toMatch(/^u\*+@example\.com$/)
      expect(rec.phone).toMatch(/^\+1\*+\d{4}$/)
      expect(rec.ssn).toMatch(/^tok_ssn_us_/)
      const blocked = await fetch(`${demo.url}/export/entities.csv?count=3`, { headers: { 'x-tenant-id': 'acme' } })
      expect(blocked.status).toBe(403)
      expect(await blocked.json()).toMatchObject({ errors: [{ extensions: { code: 'DLP_BLOCKED', type: 'ssn_us' } }] })
    } finally {
      expect(await demo.stop()).toBe(0)
    }
  })
})
