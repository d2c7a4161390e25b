// The composition point between the proxy and the filters: filter name → module. The proxy
// imports this list, never a filter directly; a filter issue adds one line here and one
// schema line in config/filters/index.ts.
//
// A filter's module is imported the first time a chain names it (its `create`), not when the
// proxy starts: every worker thread and the supervisor loaded all seven (dlp alone pulls in
// libphonenumber-js, opa-wasm and @noble/ciphers, tenant jose) whatever the config used: ~0.15 s
// of CPU per worker thread with the compile cache, ~0.2 s in the supervisor. A filter that keeps
// state shared by the worker threads (`sharedBytes`, `workerExited`) is marked `sharedState`: the
// supervisor loads those before it spawns a thread (sharedStateModules), so their buffers exist
// for a reload that names them later. A worker thread loads the ones its boot config names before
// its watchdog watches it (loadFilterModules); one a reload names loads during that build.
import type { FilterEntry, FilterName } from '../config/filters/index.ts'
import type { GatewayConfig } from '../config/schema.ts'
import type { Filter, FilterDeps, FilterModule } from '../proxy/filter.ts'

export type FilterModules = { [K in FilterName]: FilterModule<Extract<FilterEntry, { name: K }>> }

type Loaders = { [K in FilterName]: { load: () => Promise<FilterModules[K]>; sharedState?: true } }

const loaders: Loaders = {
  'request-id': { load: async () => (await import('./request-id/index.ts')).requestIdFilter },
  tenant: { load: async () => (await import('./tenant/index.ts')).tenantFilter },
  persisted: { load: async () => (await import('./persisted/index.ts')).persistedFilter },
  cache: { load: async () => (await import('./cache/index.ts')).cacheFilter, sharedState: true },
  quota: { load: async () => (await import('./quota/index.ts')).quotaFilter, sharedState: true },
  subscriptions: { load: async () => (await import('./subscriptions/index.ts')).subscriptionsFilter, sharedState: true },
  dlp: { load: async () => (await import('./dlp/index.ts')).dlpFilter },
}

/** A filter module that imports its implementation at the first `create` (or `load`). */
export class LazyFilterModule<C> implements FilterModule<C> {
  readonly name: string
  readonly sharedState: boolean
  readonly #import: () => Promise<FilterModule<C>>
  #loading: Promise<FilterModule<C>> | undefined = undefined
  #module: FilterModule<C> | undefined = undefined

  constructor(name: string, load: () => Promise<FilterModule<C>>, sharedState: boolean) {
    this.name = name
    this.#import = load
    this.sharedState = sharedState
  }

  /** Once loaded, as the module's own `create` (synchronous when it is). */
  readonly create = (config: C, deps: FilterDeps): Filter | Promise<Filter> => {
    const mod = this.#module
    return mod !== undefined ? mod.create(config, deps) : this.load().then((m) => m.create(config, deps))
  }

  load(): Promise<FilterModule<C>> {
    this.#loading ??= this.#import().then(
      (mod) => {
        // Its shared memory would never be allocated: the supervisor sizes it before any thread runs.
        if (!this.sharedState && (mod.sharedBytes !== undefined || mod.workerExited !== undefined)) {
          throw new Error(`filter "${this.name}" keeps state shared by the worker threads (sharedBytes/workerExited): mark it sharedState in filters/registry.ts`)
        }
        this.#module = mod
        return mod
      },
      (err: unknown) => {
        this.#loading = undefined // a later reload tries again
        throw err
      },
    )
    return this.#loading
  }
}

export const filterModules = Object.fromEntries(
  Object.entries(loaders).map(([name, { load, sharedState }]) => [name, new LazyFilterModule(name, load as () => Promise<FilterModule<never>>, sharedState === true)]),
) as unknown as FilterModules & { [K in FilterName]: LazyFilterModule<Extract<FilterEntry, { name: K }>> }

/**
 * The filters that keep state shared by the worker threads, loaded: the supervisor allocates their
 * `sharedBytes` once, hands the buffers to every thread it spawns and calls `workerExited` when
 * one is gone, whatever filters the config of the moment uses.
 */
export async function sharedStateModules(): Promise<[FilterName, FilterModule<never>][]> {
  const owners = Object.values(filterModules).filter((m) => m.sharedState)
  return Promise.all(owners.map(async (m) => [m.name as FilterName, (await m.load()) as FilterModule<never>] as [FilterName, FilterModule<never>]))
}

/**
 * Loads the modules of the filters `config`'s chains name. A worker thread does so before its
 * watchdog watches it: importing a module holds the thread's event loop (dlp: ~0.3 s with the
 * compile cache, seconds on a busy machine), which a short workerWatchdog.killAfterMs took for
 * a stall. Failures are left to the config build, which names the route and filter.
 */
export async function loadFilterModules(config: GatewayConfig): Promise<void> {
  const names = new Set(config.routes.flatMap((r) => r.filters.map((f) => f.name)))
  await Promise.all([...names].map((name) => filterModules[name].load().catch(() => undefined)))
}
