import { z } from 'zod'
import { filterBase } from '../primitives.ts'

/** Keeps the caller's request id or makes one, and sends it both ways. */
export const requestIdFilterConfig = z.strictObject({
  name: z.literal('request-id'),
  ...filterBase,
  /** Header that carries the id, in and out. */
  header: z.string().toLowerCase().default('x-request-id'),
  /** Keep an incoming id (true behind a trusted edge); false always generates a new one. */
  trustIncoming: z.boolean().default(true),
  /** Echo the id on the response to the client. */
  echo: z.boolean().default(true),
})
export type RequestIdFilterConfig = z.infer<typeof requestIdFilterConfig>
