import type { FastifyRequest } from 'fastify'
import { decodeAuthHeader, XenosError, type RequestAuth } from '../core/index.ts'

/** Header that carries an owner's request signature. */
export const AUTH_HEADER = 'x-xenos-auth'

/** The signature a request carries; UNAUTHENTICATED when it carries none. */
export function authOf (req: FastifyRequest): RequestAuth {
  const header = req.headers[AUTH_HEADER]
  if (typeof header !== 'string') throw new XenosError('UNAUTHENTICATED', 'this action must be signed by the instance owner: use the xenos CLI, which signs with your user key')
  return decodeAuthHeader(header)
}
