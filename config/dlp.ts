// The top-level `dlp:` section: presets (what each sensitive type becomes), the preset of each
// tenant (the control plane's setDlpPreset writes `dlp.tenants.<id>.preset`), the rule pack,
// where the keyring lives (a path: keys never travel in this document) and the export policy.
// Routes opt in with a `dlp` filter entry (config/filters/dlp.ts) that says what is an export.
import { z } from 'zod'
import { identifier, tenantId, type Parsed } from './primitives.ts'

export const DLP_ACTIONS = ['mask', 'tokenize', 'hash', 'redact', 'block'] as const
export type DlpAction = (typeof DLP_ACTIONS)[number]

const dlpTypeName = z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, { error: 'expected a type name such as email, phone_e164, ssn_us' })

/** type → action, e.g. { email: mask, phone_e164: mask }. */
export const dlpPreset = z.record(dlpTypeName, z.enum(DLP_ACTIONS))
export type DlpPreset = z.infer<typeof dlpPreset>

/** The seed's presets; always present, a document may redefine them by name. */
export const SEED_PRESETS: Record<string, DlpPreset> = {
  mask_basic: { email: 'mask', phone_e164: 'mask' },
  tokenize_strict: { email: 'tokenize', ssn_us: 'block' },
}

export const dlpConfig = z.strictObject({
  /** A rule pack file (JSON); absent = the built-in pack v1.2 (filters/dlp/rules/v1.2.json). */
  rulePack: z.string().min(1).optional(),
  /** Named presets, merged over the seed's mask_basic and tokenize_strict. */
  presets: z
    .record(identifier, dlpPreset)
    .default({})
    .transform((p) => ({ ...SEED_PRESETS, ...p })),
  /** Preset for exports when neither the tenant nor the route names one. */
  defaultPreset: identifier.optional(),
  /** Per-tenant preset; wins over the route's (setDlpPreset writes here). */
  tenants: z.record(tenantId, z.strictObject({ preset: identifier })).default({}),
  keyring: z
    .strictObject({
      /** The KMS behind tokens and keyed hashes; "local" is a JSON keyring file (mode 0600). */
      provider: z.literal('local').default('local'),
      /** Path of the keyring file, relative to the working directory. Never the keys themselves. */
      file: z.string().min(1).default('./data/dlp-keyring.json'),
      /** Create the file with one fresh key when it does not exist. */
      create: z.boolean().default(true),
    })
    .prefault({}),
  policy: z
    .strictObject({
      /** Ask the export policy (Rego, compiled to wasm) before and during each export. */
      enabled: z.boolean().default(true),
      /** A bundle in the policy catalog ("dlp") or a path to a .tar.gz built by `igw policy build`. */
      bundle: z.string().min(1).default('dlp'),
      entrypoint: z.string().min(1).default('intelgraph/dlp/decision'),
      /** Presets the default policy allows (its `data.igw.dlp.allowed_presets`). */
      allowedPresets: z.array(identifier).default(['tokenize_strict']),
      /**
       * An evaluation that takes longer fails: the export is denied, logged and counted as
       * igw_dlp_policy_failures_total{cause="runaway"} (as ext_authz's timeout denies).
       */
      budgetMs: z.int().min(1).max(60_000).default(250),
    })
    .prefault({}),
  /** Region used to read national phone formats under a phone field name or context word. */
  phoneRegion: z
    .string()
    .regex(/^[A-Z]{2}$/, { error: 'expected an ISO 3166 country code such as "US"' })
    .default('US'),
})
export type DlpConfig = z.infer<typeof dlpConfig>

interface DlpRefsDoc {
  dlp: DlpConfig
  tenants: Record<string, unknown>
  routes: { filters: { name: string; preset?: string | undefined }[] }[]
}

/** Every preset a document names must exist; every dlp filter must resolve one. */
export function checkDlpReferences(cfg: DlpRefsDoc, ctx: z.RefinementCtx, parsed: Parsed): void {
  // A presets map with a problem anywhere is not merged over the seed's: names unknown to it may be known.
  const presets = parsed(['dlp', 'presets'], true) ? cfg.dlp.presets : undefined
  const known = Object.keys(presets ?? {}).join(', ')
  const check = (name: string | undefined, path: (string | number)[]) => {
    if (presets !== undefined && name !== undefined && parsed(path) && !Object.hasOwn(presets, name)) ctx.addIssue({ code: 'custom', path, message: `unknown DLP preset "${name}" (presets: ${known})` })
  }
  if (parsed(['dlp', 'defaultPreset'])) check(cfg.dlp.defaultPreset, ['dlp', 'defaultPreset'])
  if (parsed(['dlp', 'tenants'])) {
    for (const [tenant, t] of Object.entries(cfg.dlp.tenants)) {
      check(t.preset, ['dlp', 'tenants', tenant, 'preset'])
      if (parsed(['tenants', tenant]) && !Object.hasOwn(cfg.tenants, tenant)) ctx.addIssue({ code: 'custom', path: ['dlp', 'tenants', tenant], message: `tenant "${tenant}" is not under tenants:` })
    }
  }
  if (parsed(['dlp', 'policy', 'allowedPresets'])) cfg.dlp.policy.allowedPresets.forEach((p, i) => check(p, ['dlp', 'policy', 'allowedPresets', i]))
  if (!parsed(['routes'])) return
  cfg.routes.forEach((route, i) => {
    if (!parsed(['routes', i, 'filters'])) return
    // As quota's: before the tenant filter the request has no tenant yet, so each tenant's own
    // preset (dlp.tenants.<id>.preset) was ignored without a word and the policy saw tenant null.
    const tenantAt = route.filters.findIndex((f, j) => parsed(['routes', i, 'filters', j, 'name']) && f.name === 'tenant')
    route.filters.forEach((f, j) => {
      if (!parsed(['routes', i, 'filters', j, 'name']) || f.name !== 'dlp') return
      if (tenantAt > j) ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', j], message: `dlp must come after the tenant filter (routes[${i}].filters[${tenantAt}]): it reads the tenant's preset and gives the policy the tenant` })
      check(f.preset, ['routes', i, 'filters', j, 'preset'])
      if (f.preset === undefined && parsed(['routes', i, 'filters', j, 'preset']) && parsed(['dlp', 'defaultPreset']) && cfg.dlp.defaultPreset === undefined) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'filters', j, 'preset'], message: 'expected a preset here or dlp.defaultPreset (tenants without one of their own need it)' })
      }
    })
  })
}
