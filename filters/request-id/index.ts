// Keeps the caller's request id (when trusted and well-formed) or generates a UUID, and sends
// it upstream and back to the client so both logs can be joined.
import { randomUUID } from 'node:crypto'
import type { RequestIdFilterConfig } from '../../config/filters/index.ts'
import { isSafeRequestId, type Filter, type FilterModule, type RequestContext } from '../../proxy/filter.ts'


class RequestIdFilter implements Filter {
  readonly name = 'request-id'
  readonly #header: string
  readonly #trust: boolean
  readonly #echo: boolean

  constructor(cfg: RequestIdFilterConfig) {
    this.#header = cfg.header
    this.#trust = cfg.trustIncoming
    this.#echo = cfg.echo
  }

  onRequest(ctx: RequestContext): undefined {
    let id: string | undefined
    if (this.#trust) {
      const incoming = ctx.req.headers[this.#header]
      // ctx.id already holds the incoming x-request-id when the core found it safe: not checked twice.
      if (typeof incoming === 'string' && ((incoming !== '' && incoming === ctx.id) || isSafeRequestId(incoming))) id = incoming
    }
    if (id === undefined) {
      // A kept id travels upstream as it came; a new one replaces whatever the client sent.
      id = randomUUID()
      ctx.setUpstreamHeader(this.#header, id)
    }
    ctx.id = id
    if (this.#echo) ctx.addResponseHeader(this.#header, id)
    return undefined
  }
}

export const requestIdFilter: FilterModule<RequestIdFilterConfig> = {
  create: (cfg) => new RequestIdFilter(cfg),
}
