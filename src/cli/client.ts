import { createHash, randomBytes } from 'node:crypto'
import {
  deploySpecDigest, encodeAuthHeader, formatTemplateUri, instanceIdsOf, isTemplateUri, parseTemplateUri, sha256Hex, signAction, signDeployToken, signDeploymentGrant, signNameRecord, XenosError,
  type DeploymentView, type DeployPart, type DeployResult, type DeploySpec, type HostRollout, type NameRecord, type OwnerKey, type PlacementPlan, type RequestAuth,
} from '../core/index.ts'

/** A watched request (a deploy waiting for a large template on many hosts, a migration) can take long. */
const WATCHED_TIMEOUT_MS = 60 * 60_000

/** Where a CLI command sends its requests and who signs them. */
export interface ClientInit {
  api: string
  /** The user's key, at hand or from where it is kept: made there only when first signed with (`create`). */
  key?: OwnerKey | KeySource
}

/** Where the user's key is kept: gives it, or undefined when there is none and `create` is false. */
export type KeySource = (create: boolean) => OwnerKey | undefined

/** What a deploy asks: where (hosts, or null for the hosts with most room), how many, and what each host does. */
export interface DeployRequest {
  /** `count` instances on each of these hosts; null: `count` in all, spread over the hosts with most room. */
  hosts: string[] | null
  count: number
  spec: DeploySpec
  /**
   * Names the deploy for retries: the same request id makes the same instances (a retry after
   * a lost answer makes none twice). @default a new one
   */
  requestId?: string | undefined
  /** Bids for the instances of every host's part (paid before the deploy is sent), each part's in its order, when the deploy buys CPU. */
  bids?: ((parts: DeployedPart[]) => Promise<Map<string, PartBid>>) | undefined
}

/** The instances a deploy makes on one host. */
export interface DeployedPart {
  host: string
  instances: string[]
}

/** The bid a deploy carries for one of its instances. */
export type PartBid = NonNullable<DeployPart['bids']>[number]

/** The key a deploy's tokens carry, from its request id: a retry with the same id makes the same instances. */
export function deployKeyOf (owner: string, requestId: string): string {
  return createHash('sha256').update(`xenos-deploy-key\n${owner}\n${requestId}`).digest('hex').slice(0, 32)
}

/**
 * A small HTTP client for the host API; errors come back as XenosErrors with the server's code.
 * Requests are signed by the user's key for the host that carries them out: the host the CLI
 * talks to unless said otherwise (an instance's own host, found first).
 */
export class ApiClient {
  readonly #api: string
  #key: OwnerKey | KeySource | undefined
  #self: Promise<string> | undefined

  constructor (init: ClientInit) {
    this.#api = init.api.replace(/\/+$/, '')
    this.#key = init.key
  }

  get owner (): string {
    return this.#signer().id
  }

  /** The user's owner id if the user has a key; none is made. */
  get knownOwner (): string | undefined {
    return typeof this.#key === 'function' ? this.#key(false)?.id : this.#key?.id
  }

  /** The peer id of the host the CLI talks to. */
  async hostId (): Promise<string> {
    this.#self ??= this.get<{ id: string }>('/v1/host').then(h => h.id)
    return await this.#self
  }

  /** The host instance `id` runs on now, where requests about it are signed for. */
  async hostOf (id: string): Promise<string> {
    return (await this.get<{ host: string }>(`/v1/instances/${encodeURIComponent(id)}/host`)).host
  }

  async get<T>(path: string): Promise<T> {
    return await this.#request<T>('GET', path)
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    return await this.#request<T>('POST', path, body)
  }

  /** True when `path` exists (HEAD answers 2xx). */
  async exists (path: string): Promise<boolean> {
    const res = await fetch(`${this.#api}${path}`, { method: 'HEAD', signal: AbortSignal.timeout(30_000) }).catch((err: unknown) => { throw this.#unreachable(err) })
    return res.ok
  }

  /** Streams the body of GET `path` (a blob). */
  async download (path: string): Promise<AsyncIterable<Uint8Array>> {
    const res = await fetch(`${this.#api}${path}`, { signal: AbortSignal.timeout(3_600_000) }).catch((err: unknown) => { throw this.#unreachable(err) })
    if (!res.ok || res.body === null) throw new XenosError('TEMPLATE_NOT_FOUND', `the host has no ${path} (HTTP ${res.status})`)
    return res.body
  }

  /** Follows a server-sent event stream (signed for `signed`, when given) until `signal` aborts or the host closes it. */
  async * events (path: string, signal: AbortSignal, signed?: { action: string, target: string, params: unknown }): AsyncGenerator<ServerEvent> {
    const headers = signed === undefined ? {} : await this.#auth(signed.action, signed.target, signed.params)
    const res = await fetch(`${this.#api}${path}`, { signal, headers }).catch((err: unknown) => { throw this.#unreachable(err) })
    if (!res.ok || res.body === null) throw new XenosError('PEER_PROTOCOL', `${path} answered HTTP ${res.status}`)
    yield * serverEvents(res.body)
  }

  /**
   * POSTs `body` to `path`, signed for `action` on `target` with `params` (for this host), and
   * follows the server-sent events it answers with until `signal` aborts or the host closes them.
   */
  async * signedEvents (path: string, action: string, target: string, params: unknown, body: unknown, signal: AbortSignal): AsyncGenerator<ServerEvent> {
    const headers = { 'content-type': 'application/json', accept: 'text/event-stream', ...await this.#auth(action, target, params) }
    const res = await fetch(`${this.#api}${path}`, { method: 'POST', headers, body: JSON.stringify(body), signal })
      .catch((err: unknown) => { throw this.#unreachable(err) })
    if (!res.ok || res.body === null) await this.#json(res)
    if (res.body !== null) yield * serverEvents(res.body)
  }

  /** Sends a request signed by the user's key for `action` on `target` with `params`, for host `host` (this one by default). */
  async signed<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, action: string, target: string, params: unknown, body?: unknown, host?: string): Promise<T> {
    return await this.#request<T>(method, path, body, await this.#auth(action, target, params, host))
  }

  /** Streams `body` (`length` bytes) to `path` with PUT, signed by the user's key for `action` on `target` with `params`. */
  async signedUpload<T>(path: string, action: string, target: string, params: unknown, body: AsyncIterable<Uint8Array>, length?: number): Promise<T> {
    return await this.#request<T>('PUT', path, undefined, { ...await this.#auth(action, target, params), ...length === undefined ? {} : { 'content-length': String(length) } }, body)
  }

  /** GETs `path` signed by the user's key; the response, to read its body as a stream. */
  async signedDownload (path: string, action: string, target: string, params: unknown): Promise<Response & { body: ReadableStream<Uint8Array> }> {
    const res = await this.#send('GET', path, undefined, await this.#auth(action, target, params), undefined, 24 * 3_600_000)
    if (!res.ok || res.body === null) return await this.#json(res)
    return res as Response & { body: ReadableStream<Uint8Array> }
  }

  /** Resolves a template reference (id, name, `template://me/…`) through the host. */
  async template<T>(ref: string): Promise<T> {
    const full = isTemplateUri(ref) ? formatTemplateUri(parseTemplateUri(ref, this.knownOwner)) : ref
    return await this.get<T>(`/v1/templates/${encodeURIComponent(full)}`)
  }

  /** Points `template://me/NAME/TAG` at template `templateId`, signed by the user, and publishes it to every host. */
  async publishName (name: string, tag: string, kind: NameRecord['kind'], templateId: string): Promise<{ record: NameRecord, changed: boolean }> {
    const record = signNameRecord(this.#signer(), { name, tag, kind, template: templateId })
    return await this.#request('PUT', '/v1/names', { record })
  }

  /**
   * Deploys template `templateId` as `request` says: where the hosts with most room would take
   * it (asked of this host) unless hosts are named, then a token signed for each host. With
   * `onProgress`, the host reports every host's part as it changes.
   */
  async deploy (templateId: string, request: DeployRequest, options: { wait?: boolean, onProgress?: (parts: HostRollout[]) => void } = {}): Promise<DeployResult> {
    const { onProgress, ...flags } = options
    const plan = request.hosts === null
      ? (await this.get<PlacementPlan>(`/v1/placement?template=${encodeURIComponent(templateId)}&count=${request.count}`)).hosts
      : request.hosts.map(host => ({ host, count: request.count }))
    const parts = this.deployParts(templateId, plan, request.spec, request.requestId ?? randomBytes(16).toString('hex'))
    const { bids } = request
    if (bids !== undefined) {
      const made = await bids(parts.map(p => ({ host: p.token.host, instances: instanceIdsOf(p.token) })))
      for (const part of parts) {
        const these = instanceIdsOf(part.token).flatMap(i => { const b = made.get(i); return b === undefined ? [] : [b] })
        if (these.length > 0) part.bids = these
      }
    }
    const body = { template: templateId, spec: request.spec, parts, ...flags }
    if (onProgress === undefined) return await this.#request<DeployResult>('POST', '/v1/instances', body)
    return await this.#watch<DeployResult>('/v1/instances', body, {}, 'deploy', p => { onProgress((p as { hosts: HostRollout[] }).hosts) })
  }

  /** The parts of a deploy of template `templateId` as `plan` places it, each with the user's token for its host, under `requestId`. */
  deployParts (templateId: string, plan: PlacementPlan['hosts'], spec: DeployRequest['spec'], requestId: string): DeployPart[] {
    const key = deployKeyOf(this.owner, requestId)
    const digest = deploySpecDigest(spec)
    // Over several hosts, each numbers its instances after the hosts before it: NAME-1, NAME-2… across all.
    const total = plan.reduce((n, p) => n + p.count, 0)
    const firsts = plan.map((_, i) => plan.slice(0, i).reduce((n, p) => n + p.count, 0))
    return plan.map((p, i) => ({
      token: signDeployToken(this.#signer(), { host: p.host, template: templateId, key, count: p.count, ...plan.length > 1 ? { numbering: { first: firsts[i] ?? 0, total } } : {}, spec: digest }),
      ...spec.inputs === undefined ? {} : { inputs: spec.inputs.map(i => this.authFor('data.get', i.uri, {}, p.host)) },
    }))
  }

  /**
   * Asks the host to run description `text` and supervise it: signed here as the user's grant
   * over its digest, naming the hosts that may act for the user (this host first, then those that
   * take over if it dies); `onProgress` sees the deployment after each step.
   */
  async apply (name: string, text: string, supervisors: string[], onProgress: (v: DeploymentView) => void): Promise<DeploymentView> {
    const grant = signDeploymentGrant(this.#signer(), { name, description: sha256Hex(text), supervisors })
    return await this.#watch<DeploymentView>('/v1/deployments', { text, grant }, {}, 'apply', p => { onProgress(p as DeploymentView) })
  }

  /**
   * POSTs a request signed for `action` on `target` with `params` (for host `host`); with
   * `onProgress`, asks for server-sent events and passes each `progress` event's data on until
   * the result comes.
   */
  async watched<T>(path: string, action: string, target: string, params: unknown, body: unknown, onProgress?: (p: unknown) => void, host?: string): Promise<T> {
    if (onProgress === undefined) return await this.signed<T>('POST', path, action, target, params, body, host)
    return await this.#watch<T>(path, body, await this.#auth(action, target, params, host), action, onProgress)
  }

  async #watch<T>(path: string, body: unknown, headers: Record<string, string>, what: string, onProgress: (p: unknown) => void): Promise<T> {
    const res = await this.#send('POST', path, body, { accept: 'text/event-stream', ...headers }, undefined, WATCHED_TIMEOUT_MS)
    if (!res.ok || res.body === null) return await this.#json<T>(res)
    try {
      for await (const { event, data } of serverEvents(res.body)) {
        if (event === 'progress') onProgress(data)
        else if (event === 'result') return data as T
        else if (event === 'error') throw errorOf(data, `${what} failed`)
      }
    } catch (err) {
      // The host went away in the middle of the answer.
      throw err instanceof XenosError ? err : this.#unreachable(err)
    }
    throw new XenosError('PEER_PROTOCOL', `the host closed the event stream of ${what} before its result`)
  }

  /** A signature of the user's for `action` on `target` with `params`, for host `host`, to hand to a host inside another request. */
  authFor (action: string, target: string, params: unknown, host: string): RequestAuth {
    return signAction(this.#signer(), { action, target, params, host })
  }

  async #auth (action: string, target: string, params: unknown, host?: string): Promise<Record<string, string>> {
    return { 'x-xenos-auth': encodeAuthHeader(this.authFor(action, target, params, host ?? await this.hostId())) }
  }

  #signer (): OwnerKey {
    if (this.#key === undefined) throw new XenosError('UNAUTHENTICATED', 'no user key loaded')
    if (typeof this.#key === 'function') this.#key = this.#key(true) ?? this.#key
    if (typeof this.#key === 'function') throw new XenosError('UNAUTHENTICATED', 'no user key could be made')
    return this.#key
  }

  #unreachable (err: unknown): XenosError {
    const e = err as Error
    return new XenosError('PEER_UNREACHABLE', `cannot reach the Xenos API at ${this.#api} (${e.cause instanceof Error ? e.cause.message : e.message}): is xenosd running? Set --api or XENOS_API.`)
  }

  async #request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, stream?: AsyncIterable<Uint8Array>): Promise<T> {
    return await this.#json<T>(await this.#send(method, path, body, headers, stream, stream === undefined ? 180_000 : 3_600_000))
  }

  async #send (method: string, path: string, body: unknown, headers: Record<string, string>, stream: AsyncIterable<Uint8Array> | undefined, timeoutMs: number): Promise<Response> {
    const init: RequestInit & { duplex?: 'half' } = stream !== undefined
      ? { method, headers: { ...headers, 'content-type': 'application/octet-stream' }, body: stream, duplex: 'half' }
      : { method, headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) }
    try {
      return await fetch(`${this.#api}${path}`, { ...init, signal: AbortSignal.timeout(timeoutMs) })
    } catch (err) {
      throw this.#unreachable(err)
    }
  }

  async #json<T>(res: Response): Promise<T> {
    if (res.status === 204) return undefined as T
    const text = await res.text()
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      throw new XenosError('PEER_PROTOCOL', `the API answered ${res.status} with non-JSON: ${text.slice(0, 200)}`)
    }
    if (!res.ok) throw errorOf(json, `HTTP ${res.status}`)
    return json as T
  }
}

/** One server-sent event, its data parsed as JSON. */
export interface ServerEvent {
  event: string
  data: unknown
}

async function * serverEvents (body: ReadableStream<Uint8Array>): AsyncGenerator<ServerEvent> {
  let buffer = ''
  for await (const piece of body.pipeThrough(new TextDecoderStream())) {
    buffer += piece
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const lines = buffer.slice(0, end).split('\n')
      buffer = buffer.slice(end + 2)
      const event = lines.find(l => l.startsWith('event: '))?.slice(7) ?? 'message'
      const data = lines.filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n')
      if (data !== '') yield { event, data: JSON.parse(data) as unknown }
    }
  }
}

/** The XenosError an API error body describes. */
export function errorOf (json: unknown, fallback: string): XenosError {
  const e = (json as { error?: { code?: string, message?: string, details?: Record<string, unknown> } } | null)?.error
  return new XenosError((e?.code ?? 'INTERNAL') as XenosError['code'], e?.message ?? fallback, e?.details)
}
