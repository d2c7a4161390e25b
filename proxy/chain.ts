// The request phase as a reusable function, for callers that are not an HTTP exchange
// (WebSocket upgrades, the subscription hub). HTTP requests use Exchange's inlined copy; what
// it records on the context (the error code of a local reply, the filter that answered) and
// counts (a fail-closed filter's 500) is recorded and counted here the same way.
import type { RequestContext } from './context.ts'
import { errorReply, replyProblem, type LocalReply } from './errors.ts'
import type { Decision } from './filter.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { RouteRuntime } from './runtime.ts'

export async function runRequestChain(ctx: RequestContext, route: RouteRuntime, metrics: ProxyMetrics): Promise<LocalReply | undefined> {
  for (const idx of route.requestPhase) {
    const reply = await decide(ctx, route, metrics, idx)
    if (reply === CONTINUE) continue
    // Answered before the route's request-id filter ran (a tenant refusal ahead of it): the answer
    // still carries, and the access line logs, the id that filter would have assigned (as HTTP).
    const rid = route.requestId
    if (rid !== undefined && idx < rid.index) ctx.assignRequestId()
    return reply
  }
  return undefined
}

const CONTINUE = undefined

/** Filter `idx`'s decision, with a throw or a missed deadline turned into the reply it gets. */
async function decide(ctx: RequestContext, route: RouteRuntime, metrics: ProxyMetrics, idx: number): Promise<LocalReply | undefined> {
  const filter = route.filters[idx]!
  let decision: Decision
  let from = 0
  let due = ctx.deadline
  try {
    const r = filter.onRequest!(ctx)
    if (r !== undefined && typeof (r as Promise<Decision>).then === 'function') {
      from = performance.now()
      due = filterDue(ctx, route, from)
      decision = due !== Number.POSITIVE_INFINITY ? await withinDeadline(r as Promise<Decision>, due) : await r
    } else decision = r as Decision
  } catch (err) {
    if (err === DEADLINE_PASSED) {
      // A filter that never decides (a hung dependency) held the handshake — and the client's
      // socket — past the route's total timeout, for ever.
      const message = filterMissedDeadline(ctx, route, idx, metrics, from, due)
      ctx.errorCode = 'UPSTREAM_TIMEOUT'
      metrics.proxyErrors.labels(route.name, 'UPSTREAM_TIMEOUT').inc()
      return errorReply('UPSTREAM_TIMEOUT', message)
    }
    metrics.filterErrors.labels(filter.name).inc()
    const open = route.failOpen[idx]!
    ctx.log.error({ err, filter: filter.name, failMode: open ? 'open' : 'closed' }, 'filter error')
    if (open) return CONTINUE
    ctx.answeredBy = filter.name
    ctx.errorCode = 'INTERNAL_SERVER_ERROR'
    metrics.proxyErrors.labels(route.name, 'INTERNAL_SERVER_ERROR').inc()
    return errorReply('INTERNAL_SERVER_ERROR', `filter "${filter.name}" failed`)
  }
  if (decision !== undefined) {
    ctx.answeredBy = filter.name
    const problem = replyProblem(decision)
    if (problem !== undefined) return malformedReply(ctx, route, metrics, idx, problem)
    if (decision.code !== undefined) ctx.errorCode ??= decision.code
    return decision
  }
  return CONTINUE
}

/**
 * A filter answered with a reply HTTP cannot carry (see replyProblem): a failure of that filter,
 * counted and logged as one, answered 500 whatever its failMode — the filter meant to answer (a
 * refusal, often), and failing open would have turned that answer into a pass to the upstream.
 * Relayed, a CR/LF in its header split the raw head of an upgrade's refusal (an injected
 * Set-Cookie), a status 101 answered as if upgraded, and a header value that was no string threw
 * past the chain (the client's socket cut without an answer).
 */
function malformedReply(ctx: RequestContext, route: RouteRuntime, metrics: ProxyMetrics, idx: number, problem: string): LocalReply {
  const message = noteMalformedReply(ctx, route, metrics, idx, problem)
  ctx.errorCode = 'INTERNAL_SERVER_ERROR'
  metrics.proxyErrors.labels(route.name, 'INTERNAL_SERVER_ERROR').inc()
  return errorReply('INTERNAL_SERVER_ERROR', message)
}

/** Count and log a malformed reply as its filter's failure (this chain's and the HTTP exchange's); returns the 500's message. */
export function noteMalformedReply(ctx: RequestContext, route: RouteRuntime, metrics: ProxyMetrics, idx: number, problem: string): string {
  const filter = route.filters[idx]!
  metrics.filterErrors.labels(filter.name).inc()
  ctx.log.error({ filter: filter.name, failMode: route.failOpen[idx]! ? 'open' : 'closed', problem }, 'filter answered with a reply HTTP cannot carry')
  return `filter "${filter.name}" failed`
}

/**
 * When a request-phase filter awaited from `now` must have decided: the request's deadline, or
 * without one (totalMs 0) headersMs from `now` — the bound on a client waiting for its response
 * head, as the response phase has: with neither, a hung filter held the client (an HTTP request,
 * an upgrade handshake, a subscription's admission) for ever. Infinity when headersMs is 0 too.
 */
export function filterDue(ctx: RequestContext, route: RouteRuntime, now: number): number {
  if (ctx.deadline !== Number.POSITIVE_INFINITY) return ctx.deadline
  const ms = route.timeouts.headersMs
  return ms > 0 ? now + ms : Number.POSITIVE_INFINITY
}

/**
 * A request-phase filter was still deciding when the request's deadline passed (HTTP: the
 * exchange's timer; upgrades: withinDeadline): counted and logged as that filter's failure, named
 * as the one that answered; returns the 504's message. Failing open cannot help: the time budget
 * is spent either way, so the client gets the 504 the deadline promises whatever the failMode.
 * Without a deadline (totalMs 0) the exchange gives the filter headersMs from `from` until `due`:
 * the message names that wait (it read "a time budget of Infinity ms").
 */
export function filterMissedDeadline(ctx: RequestContext, route: RouteRuntime, idx: number, metrics: ProxyMetrics, from = 0, due = ctx.deadline): string {
  const filter = route.filters[idx]!
  const deadline = due === ctx.deadline
  const budgetMs = Math.round(deadline ? due - ctx.startTime : due - from)
  metrics.filterErrors.labels(filter.name).inc()
  ctx.answeredBy = filter.name
  ctx.log.error({ filter: filter.name, failMode: route.failOpen[idx]! ? 'open' : 'closed', timeoutMs: budgetMs }, 'filter did not decide before the request deadline')
  return `filter "${filter.name}" did not decide within ${deadline ? "this request's time budget of " : ''}${budgetMs} ms`
}

const DEADLINE_PASSED: unknown = Symbol('deadline passed')

/** The filter's decision, or a rejection with DEADLINE_PASSED once `deadline` (performance.now()) is reached first. */
function withinDeadline(p: Promise<Decision>, deadline: number): Promise<Decision> {
  return new Promise<Decision>((resolve, reject) => {
    const timer = setTimeout(() => reject(DEADLINE_PASSED), Math.max(0, deadline - performance.now()))
    p.then(
      (d) => {
        clearTimeout(timer)
        resolve(d)
      },
      (err: unknown) => {
        clearTimeout(timer)
        reject(err)
      },
    )
  })
}
