// Claim lookup shared by the filters that read verified token claims (tenant, cache): one
// reading of a claim name, so a claim the tenant filter finds is found by the cache too.
//
// A claim is read as the token holds it: a string is one value, never split. A `roles` (or
// `groups`) string such as "admin editor" or "admin,editor", as some IdPs send, is one string,
// as Envoy's jwt_authn (claim_to_headers, RBAC's metadata matchers) and Apollo Router (claims
// handed to Rhai and coprocessors as JSON) read it; only OAuth's `scope` is a space-separated
// list by definition (RFC 6749 §3.3, RFC 8693 §4.2), split on spaces alone by the filter that
// reads a claim as scopes (the cache's authorization.scopeClaim: "admin,editor" there is one
// scope no allowlist names, so such requests bypass the cache, never share one). Commas are not
// split anywhere: whether "a,b" is two roles or one is the issuer's business, not a guess here.

/**
 * Read a claim by name or dotted path ("org.id"). A claim whose own name holds dots is found
 * whole first: namespaced custom claims are URLs ("https://example.com/tenant_id", as Auth0
 * requires; "https://hasura.io/jwt/claims" holding an object), which the split alone never
 * reached, so every token was refused for lacking the claim. At each level the longest own name
 * that fits comes first; only own properties count (a "constructor" claim is not Object's).
 */
export function claimAt(claims: Record<string, unknown>, path: string): unknown {
  if (Object.hasOwn(claims, path)) return claims[path]
  return path.includes('.') ? claimAtPath(claims, path) : undefined
}

function claimAtPath(cur: unknown, path: string): unknown {
  if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined
  const obj = cur as Record<string, unknown>
  if (Object.hasOwn(obj, path)) return obj[path]
  for (let dot = path.lastIndexOf('.'); dot > 0; dot = path.lastIndexOf('.', dot - 1)) {
    const head = path.slice(0, dot)
    if (!Object.hasOwn(obj, head)) continue
    const found = claimAtPath(obj[head], path.slice(dot + 1))
    if (found !== undefined) return found
  }
  return undefined
}
