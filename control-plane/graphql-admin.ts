// The GraphQL admin endpoint with the seed's schema. `@auth(abac: "...")` on a field is enforced
// by wrapping its resolver: the admin policy decides with the caller's subject, and a denial is
// a GraphQL error with code FORBIDDEN and the policy's reason.
import type { IncomingMessage } from 'node:http'
import { Kind, type GraphQLObjectType, type GraphQLSchema } from 'graphql'
import { createGraphQLError, createSchema, createYoga, type YogaServerInstance } from 'graphql-yoga'
import { quotaViews, setQuota, type ApiDeps } from './api.ts'
import type { Action, Subject } from './auth.ts'
import { setDlpPreset } from './dlp-section.ts'
import { isQuotaKind } from './quota-section.ts'
import { NotFound, PreconditionFailed, ValidationFailed } from './store.ts'

export const ADMIN_SDL = /* GraphQL */ `
  "Guards a field with the admin ABAC policy: the caller needs this attribute."
  directive @auth(abac: String!) on FIELD_DEFINITION

  type Quota {
    kind: String!
    limitPerDay: Int!
    "Units used today (the tenant's day), from the proxies' usage reports."
    usedToday: Int!
    tenant: String!
  }

  type Query {
    "Daily quotas of a tenant (default: the caller's tenant claim)."
    quotas(tenant: String): [Quota!]! @auth(abac: "admin.read")
  }

  type Mutation {
    setQuota(kind: String!, limitPerDay: Int!, tenant: String): Quota! @auth(abac: "admin.write")
    "Sets a tenant's DLP preset (mask_basic, tokenize_strict, …): the caller's tenant or the tenant argument; without either, the default preset. Returns the new config version."
    setDlpPreset(preset: String!, tenant: String): Int! @auth(abac: "admin.write")
  }
`

export interface GraphQLContext {
  subject: Subject
}

function tenantArg(ctx: GraphQLContext, arg: unknown): string {
  const t = typeof arg === 'string' && arg !== '' ? arg : ctx.subject.tenant
  if (t === undefined) throw createGraphQLError('no tenant: pass `tenant:` or use a token with a tenant claim', { extensions: { code: 'BAD_USER_INPUT' } })
  return t
}

function asGraphQLError(err: unknown): never {
  if (err instanceof Error && err.name === 'GraphQLError') throw err
  if (err instanceof ValidationFailed) throw createGraphQLError(err.message, { extensions: { code: 'BAD_USER_INPUT', problems: err.problems } })
  if (err instanceof NotFound) throw createGraphQLError(err.message, { extensions: { code: 'NOT_FOUND' } })
  if (err instanceof PreconditionFailed) throw createGraphQLError(err.message, { extensions: { code: 'CONFLICT' } })
  throw err
}

export function buildAdminSchema(deps: ApiDeps): GraphQLSchema {
  const schema = createSchema<GraphQLContext>({
    typeDefs: ADMIN_SDL,
    resolvers: {
      Query: {
        quotas: async (_root, args: { tenant?: string }, ctx) => quotaViews(deps, tenantArg(ctx, args.tenant)),
      },
      Mutation: {
        setQuota: async (_root, args: { kind: string; limitPerDay: number; tenant?: string }, ctx) => {
          const tenant = tenantArg(ctx, args.tenant)
          if (!isQuotaKind(args.kind)) throw createGraphQLError(`unknown quota kind "${args.kind}" (graphql, ingest, embeddings, subscriptions)`, { extensions: { code: 'BAD_USER_INPUT' } })
          if (args.limitPerDay < 0) throw createGraphQLError('limitPerDay must be >= 0', { extensions: { code: 'BAD_USER_INPUT' } })
          try {
            await setQuota(deps, ctx.subject.sub, tenant, args.kind, args.limitPerDay)
          } catch (err) {
            asGraphQLError(err)
          }
          return (await quotaViews(deps, tenant)).find((q) => q.kind === args.kind)
        },
        setDlpPreset: async (_root, args: { preset: string; tenant?: string }, ctx) => {
          try {
            return await setDlpPreset(deps.store, ctx.subject.sub, typeof args.tenant === 'string' && args.tenant !== '' ? args.tenant : ctx.subject.tenant, args.preset)
          } catch (err) {
            asGraphQLError(err)
          }
        },
      },
    },
  })
  // Enforce @auth: wrap every field that carries it.
  for (const typeName of ['Query', 'Mutation']) {
    // Not instanceof: yoga may load graphql's CommonJS build while this module gets the ESM one.
    const type = schema.getType(typeName) as GraphQLObjectType | undefined
    if (type === undefined || !('getFields' in type)) continue
    for (const [name, field] of Object.entries(type.getFields())) {
      const dir = field.astNode?.directives?.find((d) => d.name.value === 'auth')
      const arg = dir?.arguments?.find((a) => a.name.value === 'abac')?.value
      const attr = arg?.kind === Kind.STRING ? arg.value : undefined
      if (attr === undefined) continue
      const inner = field.resolve!
      field.resolve = (root, args: Record<string, unknown>, ctx: GraphQLContext, info) => {
        const tenant = typeof args.tenant === 'string' ? args.tenant : ctx.subject.tenant
        const d = deps.authorizer.decide(ctx.subject, attr as Action, { type: `graphql.${typeName}.${name}`, ...(tenant ? { tenant } : {}) })
        if (!d.allow) throw createGraphQLError(`${typeName}.${name} needs "${attr}": ${d.reason}`, { extensions: { code: 'FORBIDDEN', attribute: attr, reason: d.reason } })
        return inner(root, args, ctx, info)
      }
    }
  }
  return schema
}

/**
 * The authenticated subject of each request, keyed by the Node request object: yoga's server
 * context is not a safe per-request channel across its adapters, the request object is.
 */
export const requestSubjects = new WeakMap<IncomingMessage, Subject>()

export function createAdminYoga(deps: ApiDeps): YogaServerInstance<{ req: IncomingMessage }, GraphQLContext> {
  return createYoga<{ req: IncomingMessage }, GraphQLContext>({
    schema: buildAdminSchema(deps),
    context: ({ req }) => {
      const subject = requestSubjects.get(req)
      if (subject === undefined) throw createGraphQLError('unauthenticated', { extensions: { code: 'UNAUTHENTICATED' } })
      return { subject }
    },
    graphqlEndpoint: '/graphql',
    graphiql: false,
    landingPage: false,
    logging: false,
    maskedErrors: true,
  })
}
