// The GraphQL admin fields ask the admin policy about the resources the REST routes doing the same
// thing name, so an operator's own policy (keyed by resource type and id) rules both APIs alike.
// Real parts: a policy built by the opa CLI, its wasm evaluated by the Authorizer, a SQLite store.
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { GraphQLSchema } from 'graphql'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ApiDeps } from '../../control-plane/api.ts'
import { Authorizer, type Subject } from '../../control-plane/auth.ts'
import { openDb, type Db } from '../../control-plane/db.ts'
import { buildAdminSchema } from '../../control-plane/graphql-admin.ts'
import { ControlPlaneMetrics } from '../../control-plane/metrics.ts'
import { NO_TRUSTED_KEYS } from '../../control-plane/plugin-trust.ts'
import { PushHub } from '../../control-plane/push.ts'
import { loadOrCreateSigningKey } from '../../control-plane/signing.ts'
import { ConfigStore } from '../../control-plane/store.ts'
import { UsageLedger } from '../../control-plane/usage.ts'
import { UsedToday } from '../../control-plane/used-today.ts'
import { opaBinary } from '../../policies/toolchain.ts'
import { seedDocument } from '../helpers/control-plane.ts'

// An operator's policy: anyone reads quotas; quota managers write them except the subscriptions
// kind; DLP presets (the section and per tenant) belong to the DLP team, whom even admins are not.
const POLICY = `package intelgraph.admin

default allow := false

allow if {
	input.action == "admin.read"
	input.resource.type == "quotas"
}

allow if {
	input.action == "admin.write"
	"quota-manager" in input.subject.roles
	input.resource.type == "quotas"
	input.resource.id != "subscriptions"
}

allow if {
	input.action == "admin.write"
	"admin" in input.subject.roles
	not input.resource.type in {"dlp", "dlp-tenants"}
}

allow if {
	input.action == "admin.write"
	"dlp-team" in input.subject.roles
	input.resource.type in {"dlp", "dlp-tenants"}
}

decision := {"allow": allow, "reason": concat("", [input.action, " on ", input.resource.type, "/", object.get(input.resource, "id", "-")])}
`

// The graphql build yoga loads (CommonJS), which built the schema: graphql-js refuses a schema of another build.
const { graphql } = createRequire(import.meta.url)('graphql') as typeof import('graphql')

const dir = mkdtempSync(join(tmpdir(), 'igw-gql-policy-'))
let db: Db
let hub: PushHub
let usedToday: UsedToday
let schema: GraphQLSchema

beforeAll(async () => {
  const src = join(dir, 'policy')
  mkdirSync(src)
  writeFileSync(join(src, 'policy.rego'), POLICY)
  const bundle = join(dir, 'admin.tar.gz')
  const built = spawnSync(opaBinary(), ['build', '-t', 'wasm', '-e', 'intelgraph/admin/decision', '-o', bundle, src], { encoding: 'utf8' })
  if (built.status !== 0) throw new Error(`opa build: ${built.stderr}`)
  const key = loadOrCreateSigningKey(join(dir, 'key.pem'))
  db = openDb(`sqlite:${join(dir, 'igw.db')}`)
  const store = new ConfigStore(db, key)
  await store.init(seedDocument())
  const usage = new UsageLedger(db, key)
  usedToday = new UsedToday(usage)
  hub = new PushHub(db)
  const metrics = new ControlPlaneMetrics({ proxiesConnected: () => 0, headVersion: () => store.head()?.version ?? 0 })
  const deps: ApiDeps = { store, hub, usage, authorizer: await Authorizer.load(bundle), detokenizer: undefined, usedToday, trustedPublishers: NO_TRUSTED_KEYS, metrics, logger: pino({ level: 'silent' }), auditKeys: [key.publicKey] }
  schema = buildAdminSchema(deps)
}, 60_000)

afterAll(async () => {
  await hub?.close()
  await usedToday?.close()
  await db?.close()
  rmSync(dir, { recursive: true, force: true })
})

async function run(roles: string[], source: string) {
  const subject: Subject = { sub: 'someone', roles, attributes: [] }
  const r = await graphql({ schema, source, contextValue: { subject } })
  return { data: r.data, errors: r.errors?.map((e) => ({ message: e.message, code: e.extensions.code })) }
}

describe('GraphQL admin fields under a policy keyed by resource type and id', () => {
  it('quota writes are granted and refused by the quota resource REST names (type quotas, id the kind)', async () => {
    const set = await run(['quota-manager'], 'mutation { setQuota(kind: "graphql", limitPerDay: 500, tenant: "acme") { kind limitPerDay } }')
    expect(set).toEqual({ data: { setQuota: { kind: 'graphql', limitPerDay: 500 } }, errors: undefined })
    const refused = await run(['quota-manager'], 'mutation { setQuota(kind: "subscriptions", limitPerDay: 5, tenant: "acme") { kind } }')
    expect(refused.errors).toEqual([{ message: expect.stringContaining('admin.write on quotas/subscriptions'), code: 'FORBIDDEN' }])
    const read = await run([], '{ quotas(tenant: "acme") { kind limitPerDay tenant } }')
    expect(read).toEqual({ data: { quotas: [{ kind: 'graphql', limitPerDay: 500, tenant: 'acme' }] }, errors: undefined })
  })

  it('a DLP preset is the DLP resource REST names: kept from an admin the policy excludes, granted to the DLP team', async () => {
    const cases = [
      { q: 'mutation { setDlpPreset(preset: "tokenize_strict", tenant: "acme") }', resource: 'dlp-tenants/acme' },
      { q: 'mutation { setDlpPreset(preset: "tokenize_strict") }', resource: 'dlp/-' },
    ]
    for (const { q, resource } of cases) {
      const admin = await run(['admin'], q)
      expect(admin.errors).toEqual([{ message: expect.stringContaining(`admin.write on ${resource}`), code: 'FORBIDDEN' }])
      expect(admin.data).toBeNull()
      const team = await run(['dlp-team'], q)
      expect(team.errors).toBeUndefined()
      expect(team.data).toEqual({ setDlpPreset: expect.any(Number) })
    }
  })
})
