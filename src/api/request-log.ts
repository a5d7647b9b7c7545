import type { FastifyInstance, FastifyRequest } from 'fastify'
import { maybeAuthOf } from './auth.ts'

/** The error code each failed request ended with, for its log line. */
const failures = new WeakMap<FastifyRequest, string>()

/** Notes the code a request failed with (the error handler's), for `logRequests`. */
export function noteFailure (req: FastifyRequest, code: string): void {
  failures.set(req, code)
}

/**
 * A log line for each request as it is answered: every signed one at info (who signed it, the
 * route and its parameters, how it ended, how long it took), the others at debug, or at warn
 * when they failed on this host's side.
 */
export function logRequests (app: FastifyInstance): void {
  app.addHook('onResponse', async (req, reply) => {
    let who: string | undefined
    try {
      who = maybeAuthOf(req)?.owner
    } catch {} // a malformed signature was answered as such: the line says the request came unsigned
    const code = failures.get(req)
    const line = {
      method: req.method,
      route: req.routeOptions.url ?? req.url,
      params: req.params,
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime),
      ...who === undefined ? {} : { who },
      ...code === undefined ? {} : { code },
    }
    if (who !== undefined) req.log.info(line, 'signed request')
    else if (reply.statusCode >= 500) req.log.warn(line, 'request failed')
    else req.log.debug(line, 'request')
  })
}
