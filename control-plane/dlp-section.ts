// Where DLP presets live in the config document (the DLP filter owns that schema section,
// config/dlp.ts): a tenant's preset is `dlp.tenants.<id>.preset`; without a tenant, the document's
// `dlp.defaultPreset`. The schema itself checks that the preset exists.
import { ValidationFailed, type ConfigStore } from './store.ts'

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v)

/** Set a tenant's DLP preset (or the default one); returns the new config version. */
export async function setDlpPreset(store: ConfigStore, actor: string, tenant: string | undefined, preset: string): Promise<number> {
  if (preset === '') throw new ValidationFailed(['preset: expected a preset name'])
  // tenants["__proto__"] = … would set a prototype, not a tenant's preset: a silent no-op.
  if (tenant === '__proto__') throw new ValidationFailed(['dlp.tenants.__proto__: "__proto__" is not allowed as a key'])
  const r = await store.commit({
    actor,
    action: 'dlp.preset.set',
    resource: tenant ? `dlp/tenants/${tenant}/preset` : 'dlp/defaultPreset',
    change: (head) => {
      const dlp: Obj = isObj(head.document.dlp) ? { ...head.document.dlp } : {}
      let before: unknown
      if (tenant !== undefined) {
        const tenants: Obj = isObj(dlp.tenants) ? { ...dlp.tenants } : {}
        before = isObj(tenants[tenant]) ? (tenants[tenant] as Obj).preset : undefined
        tenants[tenant] = { preset }
        dlp.tenants = tenants
      } else {
        before = dlp.defaultPreset
        dlp.defaultPreset = preset
      }
      return { document: { ...head.document, dlp }, before, after: preset, result: undefined }
    },
  })
  return r.version
}
