import { z } from 'zod'
import { filterBase } from '../primitives.ts'

/**
 * Headers the proxy owns on either side, which the request-id filter can neither send upstream
 * nor to the client: hop-by-hop ones (RFC 9110 §7.6.1, as proxy/headers.ts drops them), the ones
 * it sets itself (Host, Content-Length) and Expect (answered by the proxy, refused by its client).
 */
const PROXY_OWNED = new Set(['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings', 'host', 'content-length', 'expect'])

/**
 * A header name the filter can carry the id in. Checked at load: accepted, a name HTTP cannot
 * carry or one the proxy owns failed every request (the filter's failure, a 500 or the id lost).
 */
const requestIdHeader = z
  .string()
  .toLowerCase()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { error: 'expected an HTTP header name (RFC 9110 token characters: letters, digits and !#$%&\'*+.^_`|~-)' })
  .refine((h) => !PROXY_OWNED.has(h) && !h.startsWith('proxy-'), {
    error: 'expected a header the proxy does not own (hop-by-hop ones, Host, Content-Length and Expect are its own)',
  })

/** Keeps the caller's request id or makes one, and sends it both ways. */
export const requestIdFilterConfig = z.strictObject({
  name: z.literal('request-id'),
  ...filterBase,
  /** Header that carries the id, in and out. */
  header: requestIdHeader.default('x-request-id'),
  /** Keep an incoming id (true behind a trusted edge); false always generates a new one. */
  trustIncoming: z.boolean().default(true),
  /** Echo the id on the response to the client. */
  echo: z.boolean().default(true),
})
export type RequestIdFilterConfig = z.infer<typeof requestIdFilterConfig>
