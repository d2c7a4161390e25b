// Offline validation of rendered Kubernetes objects against the Kubernetes OpenAPI schemas
// (compiled into kubernetes-models; the Prometheus Operator's CRDs from
// @kubernetes-models/prometheus-operator), made strict: the OpenAPI schemas allow unknown
// fields (the API server prunes or, with --validate=strict, rejects them), so a typo such as
// `readinesProbe` would pass. The compiled validators read every property their schema
// declares; a property they never read is one the schema does not know, so each object is
// validated through a Proxy that records the reads.

export interface SchemaProblem {
  path: string
  message: string
}

interface ModelClass {
  prototype: { validate(this: unknown): void }
}

/** apiVersion → the kubernetes-models module that holds its kinds. */
function modulePath(apiVersion: string): string {
  if (apiVersion.startsWith('monitoring.coreos.com/')) return `@kubernetes-models/prometheus-operator/${apiVersion}`
  return `kubernetes-models/${apiVersion}`
}

async function modelFor(apiVersion: string, kind: string): Promise<ModelClass | undefined> {
  let mod: Record<string, unknown>
  try {
    mod = (await import(modulePath(apiVersion))) as Record<string, unknown>
  } catch {
    return undefined
  }
  const model = mod[kind]
  return typeof model === 'function' ? (model as unknown as ModelClass) : undefined
}

interface Tracked {
  value: object
  read: Set<string>
}

function track(value: unknown, path: string, seen: Map<string, Tracked>): unknown {
  if (value === null || typeof value !== 'object') return value
  const read = new Set<string>()
  seen.set(path, { value, read })
  const children = new Map<string, unknown>()
  return new Proxy(value, {
    get(target, key, receiver) {
      const v: unknown = Reflect.get(target, key, receiver)
      if (typeof key !== 'string' || !Object.hasOwn(target, key)) return v
      read.add(key)
      let child = children.get(key)
      if (child === undefined) {
        child = track(v, `${path}/${key}`, seen)
        children.set(key, child)
      }
      return child
    },
  })
}

interface ValidationErrorShape {
  errors?: { instancePath?: string; message?: string }[]
  message: string
}

/** Every schema error and every unknown field of one object; [] when it is valid. */
export async function validateKubeObject(obj: Record<string, unknown>): Promise<SchemaProblem[]> {
  const apiVersion = obj.apiVersion
  const kind = obj.kind
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return [{ path: '', message: 'missing apiVersion or kind' }]
  const model = await modelFor(apiVersion, kind)
  if (!model) return [{ path: '', message: `no schema for ${apiVersion} ${kind}` }]
  const seen = new Map<string, Tracked>()
  const problems: SchemaProblem[] = []
  try {
    model.prototype.validate.call(track(obj, '', seen))
  } catch (err) {
    const e = err as ValidationErrorShape
    for (const x of e.errors ?? [{ instancePath: '', message: e.message }]) problems.push({ path: x.instancePath ?? '', message: x.message ?? 'invalid' })
    // A failed validator may stop early; unread fields are only meaningful after a pass.
    return problems
  }
  for (const [path, { value, read }] of seen) {
    if (Array.isArray(value)) continue
    for (const key of Object.keys(value)) {
      if (!read.has(key)) problems.push({ path: `${path}/${key}`, message: 'unknown field' })
    }
  }
  return problems
}
