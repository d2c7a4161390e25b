// The request phase as a reusable function, for callers that are not an HTTP exchange
// (WebSocket upgrades, the subscription hub). HTTP requests use Exchange's inlined copy; what
// it records on the context (the error code of a local reply, the filter that answered) and
// counts (a fail-closed filter's 500) is recorded and counted here the same way.
import type { RequestContext } from './context.ts'
import { errorReply, type LocalReply } from './errors.ts'
import type { Decision } from './filter.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { RouteRuntime } from './runtime.ts'

export async function runRequestChain(ctx: RequestContext, route: RouteRuntime, metrics: ProxyMetrics): Promise<LocalReply | undefined> {
  for (const idx of route.requestPhase) {
    const filter = route.filters[idx]!
    let decision: Decision
    try {
      decision = await filter.onRequest!(ctx)
    } catch (err) {
      metrics.filterErrors.labels(filter.name).inc()
      const open = route.failOpen[idx]!
      ctx.log.error({ err, filter: filter.name, failMode: open ? 'open' : 'closed' }, 'filter error')
      if (open) continue
      ctx.answeredBy = filter.name
      ctx.errorCode = 'INTERNAL_SERVER_ERROR'
      metrics.proxyErrors.labels(route.name, 'INTERNAL_SERVER_ERROR').inc()
      return errorReply('INTERNAL_SERVER_ERROR', `filter "${filter.name}" failed`)
    }
    if (decision !== undefined) {
      ctx.answeredBy = filter.name
      if (decision.code !== undefined) ctx.errorCode ??= decision.code
      return decision
    }
  }
  return undefined
}
