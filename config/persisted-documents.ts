// The persisted-documents manifest: operation id → document + per-id policy. A top-level
// section of the config document (not a side file) so the control plane pushes it with the
// rest of the config, versioned and audited together.
import {
  buildSchema,
  GraphQLError,
  KnownFragmentNamesRule,
  Kind,
  NoFragmentCyclesRule,
  NoUndefinedVariablesRule,
  OperationTypeNode,
  parse,
  UniqueFragmentNamesRule,
  validate,
  type GraphQLSchema,
} from 'graphql'
import { z } from 'zod'
import { durationMs, tierName } from './primitives.ts'

/**
 * "~" included: Hive's app deployments name a document `<app>~<version>~<hash>`, which its clients
 * send as `documentId`; a manifest exported from one could not be loaded.
 */
export const persistedId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.:@/+=~-]{0,255}$/, { error: 'expected an operation id of letters, digits and "_.:@/+=~-"' })

/** A cache/invalidation tag: "Entity:42", "Query.entities", "catalog". */
export const cacheTag = z.string().min(1).max(256)

export const persistedOperationPolicy = {
  /** Cost units this operation consumes (the quota filter reads it); absent: estimated statically. */
  costUnits: z.int().nonnegative().optional(),
  /** The gateway answers UPSTREAM_TIMEOUT after this long (lowers the route's total timeout). */
  timeoutMs: durationMs.min(1).optional(),
  /** Cache TTL for this operation; 0 never caches it. Absent: the cache filter's ttlSeconds. */
  cacheTtlSeconds: z.int().nonnegative().optional(),
  /** Tags: a query's cache entries carry them; a mutation with this id invalidates them. */
  cacheTags: z.array(cacheTag).default([]),
  /** Free-form hints the backend understands (a Neo4j `USING INDEX`, a PostgreSQL plan pin). */
  plannerHints: z.array(z.string().min(1).max(2048)).default([]),
  /** QoS tier for this operation, overriding the tenant's. */
  tier: tierName.optional(),
}

/**
 * Rules a document breaks whatever the schema: every GraphQL server refuses it, so a manifest
 * entry that breaks one could never run (a fragment cycle, a spread of a fragment not in the
 * document, two fragments of one name, a variable the operation does not define).
 */
const SCHEMA_FREE_RULES = [NoFragmentCyclesRule, KnownFragmentNamesRule, UniqueFragmentNamesRule, NoUndefinedVariablesRule]
let anySchema: GraphQLSchema | undefined

export const persistedOperation = z
  .strictObject({
    /** The GraphQL document, exactly as clients send it (its sha256 is also accepted as id). */
    document: z.string().min(1),
    ...persistedOperationPolicy,
  })
  .superRefine((op, ctx) => {
    let doc
    try {
      doc = parse(op.document)
    } catch (err) {
      const e = err as GraphQLError
      const loc = e.locations?.[0]
      ctx.addIssue({ code: 'custom', path: ['document'], message: `${e.message}${loc ? ` (line ${loc.line}, column ${loc.column})` : ''}` })
      return
    }
    const ops = doc.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION)
    if (ops.length !== 1) {
      ctx.addIssue({ code: 'custom', path: ['document'], message: `expected exactly one operation in a persisted document, found ${ops.length}` })
      return
    }
    const errors = validate((anySchema ??= buildSchema('type Query { _: Int }')), doc, SCHEMA_FREE_RULES)
    if (errors.length > 0) {
      const e = errors[0]!
      const loc = e.locations?.[0]
      ctx.addIssue({ code: 'custom', path: ['document'], message: `${e.message}${loc ? ` (line ${loc.line}, column ${loc.column})` : ''}` })
      return
    }
    if (ops[0]!.operation === OperationTypeNode.SUBSCRIPTION && op.cacheTtlSeconds) {
      ctx.addIssue({ code: 'custom', path: ['cacheTtlSeconds'], message: 'subscriptions are never cached' })
    }
  })
export type PersistedOperationConfig = z.infer<typeof persistedOperation>

export const persistedDocumentsConfig = z.strictObject({
  /** id → document and policy. Ids are what clients send as extensions.persistedQuery.sha256Hash. */
  operations: z.record(persistedId, persistedOperation).default({}),
})
export type PersistedDocumentsConfig = z.infer<typeof persistedDocumentsConfig>
