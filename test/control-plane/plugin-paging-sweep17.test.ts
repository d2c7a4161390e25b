// GET /v1/plugins pages like GET /v1/alerts, on SQLite and on a real PostgreSQL: a bounded page
// (`limit`, default 100, at most 1000) in a stable order (name, then upload order), and the next
// page from `next` in the body or `Link: <…>; rel="next"` (an opaque `cursor`; a bad `limit` or
// `cursor` is a 400 naming it). It used to answer every stored plugin in one response, however
// many there were, with no way to ask for less.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadPluginTrust } from '../../control-plane/plugin-trust.ts'
import { startTestControlPlane, type TestControlPlane } from '../helpers/control-plane.ts'
import { dbEngines } from '../helpers/db-engines.ts'
import { makePublisher, signedPackage, writeTrustFile } from '../helpers/plugins.ts'
import { startPostgres, type TestPostgres } from '../helpers/postgres.ts'
import { Conformance } from './openapi-conformance.ts'

let pg: TestPostgres
const scratch = mkdtempSync(join(tmpdir(), 'igw-plugin-paging17-'))
beforeAll(async () => {
  pg = await startPostgres()
}, 60_000)
afterAll(async () => {
  await pg?.close()
  rmSync(scratch, { recursive: true, force: true })
})

const acme = makePublisher('acme', 'acme-2026')
const globex = makePublisher('globex', 'globex-1')
const trustFile = writeTrustFile(join(scratch, 'plugin-trust.json'), [acme, globex])

const engines = dbEngines('igw_plugin_paging17', () => pg, { dir: scratch })

interface Page<T> {
  items: T[]
  next?: string
}
interface Item {
  name: string
  version: string
  publisher: string
}

describe.each(engines)('GET /v1/plugins paging on $name', ({ name: engine, spec: dbFor }) => {
  let cp: TestControlPlane
  let oa: Conformance
  beforeAll(async () => {
    cp = await startTestControlPlane({ db: await dbFor(`igw_plugin_paging17_${engine}`), pluginTrust: loadPluginTrust(trustFile) })
    oa = new Conformance(await (await fetch(`${cp.url}/openapi.json`)).json())
  }, 60_000)
  afterAll(async () => {
    await cp?.close()
  })

  const upload = async (signer: typeof acme, name: string, version: string) => {
    const r = await cp.api('/v1/plugins', { method: 'POST', body: JSON.stringify(signedPackage(signer, { name, version, artifact: Buffer.from(`${name}@${version}`) })) })
    expect(r.status, await r.clone().text()).toBe(201)
  }

  /** Every page from `first`, following `next`; each checked against the OpenAPI document, the Link header against `next`. */
  async function walk(first: string, maxPages = 60): Promise<Item[][]> {
    const pages: Item[][] = []
    let url: string | undefined = first
    while (url !== undefined) {
      expect(pages.length, 'too many pages').toBeLessThan(maxPages)
      const r = await cp.api(url)
      const link = r.headers.get('link')
      const body = (await oa.check(r, 'GET', '/v1/plugins')) as Page<Item>
      expect(r.status).toBe(200)
      if (body.next === undefined) expect(link).toBeNull()
      else expect(link).toBe(`<${body.next}>; rel="next"`)
      pages.push(body.items)
      url = body.next
    }
    return pages
  }

  it('limit and cursor page through every plugin in a stable order, keeping the filters; bad ones are a 400', async () => {
    // 130 plugins: 26 names of 5 versions each, uploaded interleaved (so upload order is not name order); every fifth name is globex's.
    const names = Array.from({ length: 26 }, (_v, i) => `plug-${String.fromCharCode(122 - i)}`)
    const signerOf = (name: string) => (names.indexOf(name) % 5 === 0 ? globex : acme)
    for (let v = 0; v < 5; v++) for (const name of names) await upload(signerOf(name), name, `1.${v}.0`)
    const key = (p: Item) => `${p.name}@${p.version}`
    const order = [...names].sort().flatMap((n) => Array.from({ length: 5 }, (_v, i) => `${n}@1.${i}.0`))

    // No parameters: a bounded first page (100), in order, and the way on.
    const first = await cp.api('/v1/plugins')
    const firstBody = (await oa.check(first, 'GET', '/v1/plugins')) as Page<Item>
    expect(firstBody.items.map(key)).toEqual(order.slice(0, 100))
    expect(firstBody.next).toMatch(/^\/v1\/plugins\?limit=100&cursor=[\w-]+$/)
    expect(first.headers.get('link')).toBe(`<${firstBody.next}>; rel="next"`)

    const pages = await walk('/v1/plugins?limit=40')
    expect(pages.map((p) => p.length)).toEqual([40, 40, 40, 10])
    expect(pages.flat().map(key)).toEqual(order)

    // A page that ends exactly at the last plugin has no next page.
    const exact = (await (await cp.api('/v1/plugins?limit=130')).json()) as Page<Item>
    expect(exact.items).toHaveLength(130)
    expect(exact.next).toBeUndefined()

    // The filters ride along in the next link.
    const globexPages = await walk('/v1/plugins?publisher=globex&limit=7')
    expect(globexPages.flat().every((p) => p.publisher === 'globex')).toBe(true)
    expect(globexPages.flat().map(key)).toEqual(order.filter((k) => signerOf(k.split('@')[0]!) === globex))
    expect(globexPages.length).toBe(Math.ceil(globexPages.flat().length / 7))
    const one = await walk('/v1/plugins?name=plug-q&limit=2')
    expect(one.flat().map(key)).toEqual(['plug-q@1.0.0', 'plug-q@1.1.0', 'plug-q@1.2.0', 'plug-q@1.3.0', 'plug-q@1.4.0'])

    // A plugin uploaded while a client pages (after its cursor) is in a later page; none repeats.
    const half = (await (await cp.api('/v1/plugins?limit=65')).json()) as Page<Item>
    await upload(signerOf('plug-z'), 'plug-z', '2.0.0')
    await upload(signerOf('plug-a'), 'plug-a', '2.0.0') // before the cursor: not in the rest, and nothing shifts
    const rest = await walk(half.next!)
    const seen = [...half.items, ...rest.flat()].map(key)
    expect(new Set(seen).size).toBe(seen.length)
    expect(seen).toContain('plug-z@2.0.0')
    expect(seen).not.toContain('plug-a@2.0.0')
    expect(seen.filter((k) => k !== 'plug-z@2.0.0')).toEqual(order)

    const cursorOf = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
    const bad: [string, RegExp][] = [
      ['cursor=abc', /^cursor: expected the cursor of a previous page/],
      ['cursor=', /^cursor: expected the cursor of a previous page/],
      ['cursor=%2B%2F%3D', /^cursor: expected the cursor of a previous page/],
      [`cursor=${cursorOf(['plug-a', -1, '1.0.0'])}`, /^cursor: expected the cursor of a previous page/],
      [`cursor=${cursorOf(['Plug A', 1, '1.0.0'])}`, /^cursor: expected the cursor of a previous page/],
      [`cursor=${cursorOf(['plug-a', 1, 'x\u0000'])}`, /^cursor: expected the cursor of a previous page/],
      [`cursor=${cursorOf({ name: 'plug-a' })}`, /^cursor: expected the cursor of a previous page/],
      [`cursor=${'A'.repeat(5000)}`, /^cursor: expected the cursor of a previous page/],
      ['limit=0', /^limit: expected an integer from 1 to 1000/],
      ['limit=1001', /^limit: expected an integer from 1 to 1000/],
      ['limit=2.5', /^limit: expected an integer from 1 to 1000/],
      ['limit=', /^limit: expected an integer from 1 to 1000/],
    ]
    for (const [q, problem] of bad) {
      expect(await oa.check(await cp.api(`/v1/plugins?${q}`), 'GET', '/v1/plugins'), q).toMatchObject({ status: 400, problems: [expect.stringMatching(problem)] })
    }
  }, 120_000)
})
