// Where DLP presets live in the config document (the DLP filter owns that schema section,
// config/dlp.ts): a tenant's preset is `dlp.tenants.<id>.preset`; without a tenant, the document's
// `dlp.defaultPreset`. The schema itself checks that the preset exists.
import { ValidationFailed, type ConfigStore } from './store.ts'

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v)

/**
 * Set a tenant's DLP preset (or the default one); returns the new config version.
 *
 * A tenant's preset is audited as the REST API audits the same change (`PUT /v1/dlp-tenants/<t>`):
 * resource `dlp-tenants/<t>`, before/after the tenant's entry (`{preset}`), so
 * `GET /v1/audit?resource=dlp-tenants/<t>` lists the changes made through either API. Entries
 * written before used `dlp/tenants/<t>/preset` with the bare preset names; they are left as they
 * were signed (the chain hashes them). The default preset keeps `dlp/defaultPreset`.
 */
export async function setDlpPreset(store: ConfigStore, actor: string, tenant: string | undefined, preset: string, precondition?: (current: unknown) => void): Promise<number> {
  if (preset === '') throw new ValidationFailed(['preset: expected a preset name'])
  // tenants["__proto__"] = … would set a prototype, not a tenant's preset: a silent no-op.
  if (tenant === '__proto__') throw new ValidationFailed(['dlp.tenants.__proto__: "__proto__" is not allowed as a key'])
  const r = await store.commit({
    actor,
    action: 'dlp.preset.set',
    resource: tenant !== undefined ? `dlp-tenants/${tenant}` : 'dlp/defaultPreset',
    change: (head) => {
      const dlp: Obj = isObj(head.document.dlp) ? { ...head.document.dlp } : {}
      let before: unknown
      let after: unknown
      if (tenant !== undefined) {
        const tenants: Obj = isObj(dlp.tenants) ? { ...dlp.tenants } : {}
        before = Object.hasOwn(tenants, tenant) ? tenants[tenant] : undefined
        // What PUT /v1/dlp-tenants/<t> takes If-Match on: the tenant's entry (absent: undefined).
        precondition?.(before)
        after = { preset }
        tenants[tenant] = { preset }
        dlp.tenants = tenants
      } else {
        // What PUT /v1/dlp takes If-Match on: the whole section (not set: null).
        precondition?.(head.document.dlp ?? null)
        before = dlp.defaultPreset
        after = preset
        dlp.defaultPreset = preset
      }
      return { document: { ...head.document, dlp }, before, after, result: undefined }
    },
  })
  return r.version
}
