/**
 * @packageDocumentation
 * The HTTP API every host serves (fastify + zod; OpenAPI at `/openapi.json`, Prometheus text at
 * `/metrics`). Any host answers for the whole cloud: actions on instances elsewhere are
 * forwarded over the overlay.
 *
 * @example
 * ```ts
 * const app = await buildApp(host)
 * const res = await app.inject({ method: 'GET', url: '/v1/search?kind=template' })
 * ```
 */
export { buildApp, AUTH_HEADER } from './app.ts'
