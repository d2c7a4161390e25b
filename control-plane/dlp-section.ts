// Where the DLP preset lives in the config document (the DLP filter owns that schema section).
// This adapter is the one place that knows it, for GraphQL setDlpPreset and the REST resources.
import { ValidationFailed, type ConfigStore } from './store.ts'

/** Set the preset on every DLP filter of every route; returns the new config version. */
export async function setDlpPreset(store: ConfigStore, actor: string, preset: string): Promise<number> {
  const r = await store.commit({
    actor,
    action: 'dlp.preset.set',
    resource: 'dlp/preset',
    change: (head) => {
      const routes = (head.document.routes as Record<string, unknown>[] | undefined) ?? []
      const before: Record<string, unknown> = {}
      const after: Record<string, unknown> = {}
      let found = 0
      const next = routes.map((r) => ({
        ...r,
        filters: ((r.filters as Record<string, unknown>[] | undefined) ?? []).map((f) => {
          if (f.name !== 'dlp') return f
          found++
          before[String(r.name)] = f.preset ?? null
          after[String(r.name)] = preset
          return { ...f, preset }
        }),
      }))
      if (found === 0) throw new ValidationFailed(['routes: no route has a dlp filter to set a preset on'])
      return { document: { ...head.document, routes: next }, before, after, result: undefined }
    },
  })
  return r.version
}
