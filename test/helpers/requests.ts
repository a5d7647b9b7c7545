import { randomBytes } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { deploySpecDigest, encodeAuthHeader, signAction, signDeployToken, type DeployToken, type OwnerKey, type RequestAuth } from '../../src/core/index.ts'

/** Requests to one in-process host's API (through fastify's inject), signed as its routes ask. */
export class Requests {
  readonly #app: FastifyInstance
  readonly #host: string

  constructor (app: FastifyInstance, host: string) {
    this.#app = app
    this.#host = host
  }

  /** `key`'s signature of `action` on `target` with `params`, for this host (or `host`). */
  authOf (key: OwnerKey, action: string, target: string, params: unknown, host = this.#host): RequestAuth {
    return signAction(key, { action, target, params, host })
  }

  /** The same, as an X-Xenos-Auth header. */
  auth (key: OwnerKey, action: string, target: string, params: unknown, host = this.#host): Record<string, string> {
    return { 'x-xenos-auth': encodeAuthHeader(this.authOf(key, action, target, params, host)) }
  }

  async inject (method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD', url: string, headers: Record<string, string> = {}, payload?: unknown): Promise<LightMyRequestResponse> {
    return await this.#app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as object }) })
  }

  /** A deploy token of `key` for `count` instances of `template` with `spec` on this host (or `host`). */
  token (key: OwnerKey, template: string, spec: unknown, count: number, o: { host?: string, key?: string, issuedAt?: number } = {}): DeployToken {
    return signDeployToken(key, { host: o.host ?? this.#host, template, key: o.key ?? randomBytes(16).toString('hex'), count, spec: deploySpecDigest(spec) }, o.issuedAt)
  }

  /** Deploys `count` instances of `template` with `spec` here, signed by `key` (or with the tokens given). */
  async deploy (key: OwnerKey, template: string, spec: { name: string | null, [more: string]: unknown }, count = 1, tokens?: DeployToken[]): Promise<LightMyRequestResponse> {
    const parts = (tokens ?? [this.token(key, template, spec, count)]).map(token => ({ token }))
    return await this.inject('POST', '/v1/instances', {}, { template, spec, parts })
  }
}
