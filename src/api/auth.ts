import type { FastifyRequest } from 'fastify'
import { decodeAuthHeader, XenosError, type RequestAuth } from '../core/index.ts'

/** Header that carries a request's signature. */
export const AUTH_HEADER = 'x-xenos-auth'

/** Who must sign a route's requests, as /openapi.json tells clients. */
export type Signer = 'owner' | 'operator' | 'owner or operator' | 'any key'

/** The OpenAPI security schemes of the API: every one is a signature in the X-Xenos-Auth header (see docs/security.md). */
export const SECURITY_SCHEMES = Object.fromEntries((['owner', 'operator', 'owner or operator', 'any key'] as const).map(by => [schemeOf(by), {
  type: 'apiKey' as const,
  in: 'header' as const,
  name: 'X-Xenos-Auth',
  description: `"v2 owner=… host=… ts=… nonce=… sig=…": an ed25519 signature, by ${by === 'any key' ? 'any key (the answer shows only what is the signer\'s)' : `the ${by}`}, of the action, its target and parameters, for the host that carries it out`,
}]))

function schemeOf (by: Signer): string {
  return `${by.replace(/ (\w)/g, (_, c: string) => c.toUpperCase())}Signature`
}

/**
 * What a route's schema says of its signature: the security scheme, and the action signed (the
 * OpenAPI extension `x-xenos-signature`), so that a client knows what to sign.
 */
export function signedBy (by: Signer, action: string): { security: Array<Record<string, string[]>>, 'x-xenos-signature': { by: Signer, action: string } } {
  return { security: [{ [schemeOf(by)]: [] }], 'x-xenos-signature': { by, action } }
}

/** The same for a route that is open, and shows the signer more when signed. */
export function optionallySignedBy (by: Signer, action: string): ReturnType<typeof signedBy> {
  const signed = signedBy(by, action)
  return { ...signed, security: [{}, ...signed.security] }
}

/** What a route's schema says when its signatures are in its body (orders, tokens, records), not in a header. */
export function signedInBody (by: Signer, what: string): { security: [], 'x-xenos-signature': { by: Signer, action: string, in: 'body' } } {
  return { security: [], 'x-xenos-signature': { by, action: what, in: 'body' } }
}

/** The signature a request carries; UNAUTHENTICATED when it carries none. */
export function authOf (req: FastifyRequest): RequestAuth {
  const auth = maybeAuthOf(req)
  if (auth === undefined) throw new XenosError('UNAUTHENTICATED', 'this request must be signed: use the xenos CLI, which signs with your user key (see docs/security.md)')
  return auth
}

/** The signature a request carries, if any. */
export function maybeAuthOf (req: FastifyRequest): RequestAuth | undefined {
  const header = req.headers[AUTH_HEADER]
  return typeof header === 'string' ? decodeAuthHeader(header) : undefined
}
