import { z } from 'zod'
import { byteSize, filterBase, identifier } from '../primitives.ts'

const responsePath = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/, { error: 'expected a response path such as "entities" or "user.contacts"' })

/**
 * DLP on export responses. Marks what on this route is an export; only those responses are
 * inspected and transformed (presets, keyring and policy live under the top-level `dlp:`).
 */
export const dlpFilterConfig = z
  .strictObject({
    name: z.literal('dlp'),
    ...filterBase,
    /** Preset for this route's exports (a tenant's own preset wins); else dlp.defaultPreset. */
    preset: identifier.optional(),
    exports: z
      .strictObject({
        /** Path prefixes of downloads; format "auto" follows the response content type. */
        paths: z
          .array(
            z.strictObject({
              prefix: z.string().startsWith('/', { error: 'expected a path starting with "/"' }),
              format: z.enum(['auto', 'json', 'ndjson', 'csv']).default('auto'),
            }),
          )
          .default([]),
        graphql: z
          .strictObject({
            /** Operation names whose responses are exports. */
            operations: z.array(z.string().min(1)).default([]),
            /**
             * Response paths under `data` ("entities", "user.contacts"): an operation selecting one
             * is an export, and only these subtrees (plus `errors`) are transformed.
             */
            responsePaths: z.array(responsePath).default([]),
          })
          .prefault({}),
      })
      .prefault({}),
    /** Bytes of a streamed export inspected before the head is sent (a block there is a clean 403). */
    lookaheadBytes: byteSize.default(64 * 1024),
    /** JSON responses up to this size are read whole and decided before the head; also the longest NDJSON record held. */
    maxJsonBytes: byteSize.default(8 * 1024 * 1024),
    /** Longest single value (JSON string, CSV record) accepted; longer fails closed. */
    maxValueBytes: byteSize.default(1024 * 1024),
    csv: z
      .strictObject({
        /** The first row names the columns (column names are field hints, like JSON keys). */
        header: z.boolean().default(true),
        delimiter: z.string().length(1).default(','),
      })
      .prefault({}),
    /** A response whose format cannot be inspected (images, zip…): refuse it (block) or pass it. */
    uninspectable: z.enum(['block', 'pass']).default('block'),
  })
  .refine((f) => f.exports.paths.length > 0 || f.exports.graphql.operations.length > 0 || f.exports.graphql.responsePaths.length > 0, {
    error: 'expected exports.paths or exports.graphql (operations / responsePaths): this filter marks no export',
    path: ['exports'],
  })
export type DlpFilterConfig = z.infer<typeof dlpFilterConfig>
