import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify'
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod'
import type { Logger } from 'pino'
import { createReadStream } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable } from 'node:stream'
import type { RawServerDefault } from 'fastify'
import { z } from 'zod'
import { drainResultSchema, INSTANCE_ID_PATTERN, nameRecordSchema, toXenosError, XenosError, type Advert } from '../core/index.ts'
import { parseManifest, validateManifest } from '../images/index.ts'
import type { ApiHost } from './api-host.ts'
import { AUTH_HEADER, authOf, maybeAuthOf, optionallySignedBy, signedBy, signedInBody } from './auth.ts'
import { registerBankRoutes } from './bank.ts'
import { registerBudgetRoutes } from './budgets.ts'
import { registerDataRoutes } from './data.ts'
import { registerDeploymentRoutes } from './deployments.ts'
import { eventStream, withProgress } from './events.ts'
import { registerInstanceRoutes } from './instances.ts'
import { registerHostMetrics } from './metrics.ts'
import { media, swaggerOptions } from './openapi.ts'
import { registerXmlRpc } from './xmlrpc.ts'
import { registerDashboard } from '../web/index.ts'
import { logRequests, noteFailure } from './request-log.ts'
import {
  errorResponses, hostInfoSchema, importTemplateBody,
  blobParams, connectBody, drainBody, nameListQuery, namePublishSchema, nameRecordBody, peersSchema, refParams, searchQuery, searchResultSchema, templateRemovalSchema, templateSummarySchema, transferSchema,
} from './schemas.ts'

/** Largest blob accepted in one upload (a template's disk image). */
const MAX_BLOB_BYTES = 64 * 1024 * 1024 * 1024

export type Api = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, ZodTypeProvider>

function tagsOf (tag: string | string[] | undefined): Record<string, string> | undefined {
  if (tag === undefined) return undefined
  const out: Record<string, string> = {}
  for (const t of Array.isArray(tag) ? tag : [tag]) {
    const i = t.indexOf('=')
    if (i <= 0) throw new XenosError('INVALID_ARGUMENT', `tag filter "${t}" must look like KEY=VALUE`)
    out[t.slice(0, i)] = t.slice(i + 1)
  }
  return out
}

/** Host adverts cheapest first (Tycoon's service location: hosts ranked by price), the rest after them as they were. */
function byPrice (adverts: Advert[]): Advert[] {
  const price = (a: Advert): number => a.kind === 'host' ? a.body.price ?? 0 : Infinity
  return [...adverts].sort((a, b) => (price(a) - price(b)) || 0)
}

function searchView (a: Advert): z.infer<typeof searchResultSchema>['results'][number] {
  return { kind: a.kind, id: a.id, host: a.host, issuedAt: a.issuedAt, expiresAt: a.expiresAt, body: a.body }
}

/** The registry code of an error fastify itself raised (a body too large, a bad content type, …), by its status. */
function fastifyError (err: FastifyError): XenosError {
  if (err.validation !== undefined || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') return new XenosError('INVALID_ARGUMENT', err.message)
  switch (err.statusCode) {
    case 413: return new XenosError('TOO_LARGE', err.message)
    case 415: return new XenosError('UNSUPPORTED_MEDIA_TYPE', `${err.message}: send JSON (application/json), or a file as application/octet-stream`)
    case 404: return new XenosError('ROUTE_NOT_FOUND', err.message)
    default: return err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? new XenosError('INVALID_ARGUMENT', err.message) : toXenosError(err)
  }
}

const errors = errorResponses

export { AUTH_HEADER }

/** Builds the HTTP API of one host (not listening yet, so tests can `inject`). */
export async function buildApp (host: ApiHost, log?: Logger): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = log ?? host.log.child({ component: 'api' })
  const app = Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: 1024 * 1024 })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  await app.register(swagger, swaggerOptions())
  // The same document for people: Swagger UI, its files served by the host itself.
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list', deepLinking: true } })

  logRequests(app)
  registerHostMetrics(app, host)
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const e = err instanceof XenosError ? err : fastifyError(err)
    noteFailure(req, e.code)
    if (e.code === 'INTERNAL') app.log.error({ err }, 'request failed')
    void reply.status(e.status).send({ error: e.toJSON() })
  })
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'ROUTE_NOT_FOUND', message: `no route ${req.method} ${req.url}; see /openapi.json` } })
  })

  const api = app.withTypeProvider<ZodTypeProvider>()

  api.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  api.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }))
  api.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    void reply.type(host.metrics.registry.contentType)
    return await host.metrics.text()
  })

  api.get('/v1/host', { schema: { operationId: 'getHost', summary: 'This host', response: { 200: hostInfoSchema } } }, async () => host.info())

  api.get('/v1/peers', { schema: { operationId: 'listPeers', summary: 'Connected peers and advertised hosts', response: { 200: peersSchema } } }, async () => {
    const connected = host.overlay.connectedPeers()
    const hosts = host.overlay.search({ kind: 'host' }).flatMap(a => a.kind === 'host' ? [{ ...a.body, id: a.host, expiresAt: a.expiresAt }] : [])
    const unreachable = host.overlay.cache.unreachableHosts().map(u => ({ id: u.host, name: u.last.flatMap(a => a.kind === 'host' ? [a.body.name] : [])[0] ?? '', since: u.since }))
    return { connected, hosts, unreachable }
  })

  registerTemplateRoutes(api, host)
  registerInstanceRoutes(api, host)
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => { done(null, payload) })
  registerDataRoutes(api, host)
  registerDeploymentRoutes(api, host)
  registerBankRoutes(api, host)
  registerBudgetRoutes(api, host)
  registerXmlRpc(app)
  await registerDashboard(app)

  api.get('/v1/search', { schema: { operationId: 'search', summary: 'Search adverts of hosts, templates and instances', querystring: searchQuery, response: { 200: searchResultSchema, ...errors } } }, async req => {
    const { q, kind, host: onHost, waitMs, from, limit, sort } = req.query
    const tags = tagsOf(req.query.tag)
    const query = { ...(q === undefined ? {} : { text: q }), ...(kind === undefined ? {} : { kind }), ...(tags === undefined ? {} : { tags }), ...(onHost === undefined ? {} : { host: onHost }) }
    const exact = q !== undefined && q !== ''
    if (from === 'dht') {
      if (!exact) throw new XenosError('INVALID_ARGUMENT', 'a DHT search needs q: an exact id or name')
      return { results: (await lookupExact(host, q, kind, false)).map(searchView) }
    }
    let results = await host.overlay.cache.waitFor(query, waitMs, limit)
    if (results.length === 0 && exact && from === 'any') results = await lookupExact(host, q, kind, true)
    return { results: (sort === 'price' ? byPrice(results) : results).map(searchView) }
  })

  api.post('/v1/host/drain', {
    schema: {
      operationId: 'drainHost',
      ...media({ progress: true }),
      summary: 'Move every running instance on this host to other hosts, one at a time, live; the host takes no new instances until undrained. With `Accept: text/event-stream`: `progress` events (instance, destination, its migration), then `result` or `error`',
      ...signedBy('operator', 'drain on this host\'s peer id, params {to: the hosts named, or null}'),
      body: drainBody,
      response: { 200: drainResultSchema, ...errors },
    },
  }, async (req, reply) => {
    const auth = authOf(req)
    return await withProgress(req, reply, 200, async progress => await host.draining.drain(req.body.to ?? null, auth, progress))
  })

  api.post('/v1/host/undrain', { schema: { operationId: 'undrainHost', summary: 'Let a drained host take instances again', ...signedBy('operator', 'undrain on this host\'s peer id'), response: { 204: z.null(), ...errors } } }, async (req, reply) => {
    host.draining.undrain(authOf(req))
    void reply.status(204)
    return null
  })

  api.post('/v1/connect', {
    schema: {
      operationId: 'connectToService',
      ...media({ events: true }),
      summary: 'Open a local port on this host that reaches a service (yours; any, for the operator) through the overlay, on whichever host runs it now (it follows migrations). Answers with server-sent events: `listening` (address, port), then `stats` as connections are made; the port closes when the request does. Only the operator opens ports on other addresses than loopback',
      ...signedBy('owner or operator', 'connect on the target, params {endpoint (or null), address, port}'),
      body: connectBody,
    },
  }, async (req, reply) => {
    const { target, endpoint, address, port } = req.body
    const listener = await host.services.listen({ target, endpoint }, address, port, authOf(req))
    const send = eventStream(reply)
    send('listening', { address: listener.address, port: listener.port, target })
    let last = ''
    const timer = setInterval(() => {
      const stats = listener.stats()
      const now = JSON.stringify(stats)
      if (now !== last) send('stats', stats)
      last = now
    }, 500)
    // The response, not the request, says when the client went: the request's body ended long ago.
    reply.raw.once('close', () => {
      clearInterval(timer)
      void listener.close()
    })
  })

  return app
}

function registerTemplateRoutes (api: Api, host: ApiHost): void {
  api.get('/v1/templates', { schema: { operationId: 'listTemplates', summary: 'Templates held by this host', response: { 200: z.object({ templates: z.array(templateSummarySchema) }) } } }, async () => ({
    templates: host.library.list().map(t => ({
      id: t.id, name: t.manifest.name, version: t.manifest.version, driver: t.manifest.driver, tags: t.manifest.tags, resources: t.manifest.resources, hosts: [host.overlay.peerId],
    })),
  }))

  api.put('/v1/names', { schema: { operationId: 'publishName', ...signedInBody('owner', 'the name record in the body, signed by the owner its name starts with'), summary: 'Publish a template://owner/name/tag record signed by its owner, to every host', body: nameRecordBody, response: { 200: namePublishSchema, ...errors } } }, async req => await host.publishName(req.body.record))

  api.get('/v1/names', { schema: { operationId: 'listNames', summary: 'Template names known to this host (every host knows them all)', querystring: nameListQuery, response: { 200: z.object({ names: z.array(nameRecordSchema) }) } } }, async req => ({
    names: host.names.list(req.query.owner),
  }))

  api.post('/v1/templates', { schema: { operationId: 'importTemplate', summary: 'Import a template manifest as yours: its image files must be on this host (upload them first)', ...signedBy('any key', 'template.import on "templates", params the request body'), body: importTemplateBody, response: { 201: templateSummarySchema, ...errors } } }, async (req, reply) => {
    const manifest = 'text' in req.body ? parseManifest(req.body.text) : validateManifest(req.body.manifest)
    const t = await host.templates.import(manifest, req.body, authOf(req))
    void reply.status(201)
    return { ...await host.catalog.resolve(t.id), manifest: t.manifest }
  })

  api.get('/v1/templates/:ref', { schema: { operationId: 'getTemplate', summary: 'Resolve a template by id, id prefix, name or name:version, here or on the overlay', params: refParams, response: { 200: templateSummarySchema, ...errors } } }, async req => {
    const summary = await host.catalog.resolve(req.params.ref)
    const local = host.library.get(summary.id)
    return local === undefined ? summary : { ...summary, manifest: local.manifest }
  })

  api.post('/v1/templates/:ref/pull', { schema: { operationId: 'pullTemplate', summary: 'Fetch a template and its image files onto this host from the hosts that hold them (GET /v1/transfers shows progress)', ...signedBy('operator', 'template.pull on the template id'), params: refParams, response: { 200: templateSummarySchema, ...errors } } }, async req => {
    const summary = await host.catalog.resolve(req.params.ref)
    await host.templates.pull(summary.id, authOf(req))
    return await host.catalog.resolve(summary.id)
  })

  api.get('/v1/transfers/events', { schema: { operationId: 'watchTransfers', ...media({ events: true }), ...optionallySignedBy('any key', 'transfers on this host\'s peer id'), summary: 'Server-sent events: `progress` as image files arrive, `done` when each ends (with `error` if it failed); files of the data repository only to their owner (sign `transfers` on this host\'s peer id)' } }, async (req, reply) => {
    const visible = transfersFor(host, req)
    const send = eventStream(reply)
    const onProgress = (t: TransferLike): void => { if (visible(t)) send('progress', t) }
    const onDone = (t: TransferLike): void => { if (visible(t)) send('done', t) }
    host.fetcher.on('progress', onProgress)
    host.fetcher.on('done', onDone)
    for (const t of host.fetcher.transfers.values()) onProgress(t)
    reply.raw.once('close', () => {
      host.fetcher.off('progress', onProgress)
      host.fetcher.off('done', onDone)
    })
  })

  api.get('/v1/transfers', { schema: { operationId: 'listTransfers', ...optionallySignedBy('any key', 'transfers on this host\'s peer id'), summary: 'Image files this host is fetching now; files of the data repository only to their owner (sign `transfers` on this host\'s peer id)', response: { 200: z.object({ transfers: z.array(transferSchema) }), ...errors } } }, async req => ({
    transfers: [...host.fetcher.transfers.values()].filter(transfersFor(host, req)),
  }))

  api.delete('/v1/templates/:ref', { schema: { operationId: 'removeTemplate', summary: 'Remove a template from this host, and the image files no other template needs (its importer, or the operator)', ...signedBy('owner or operator', 'template.remove on the template id'), params: refParams, response: { 200: templateRemovalSchema, ...errors } } }, async req => {
    const t = host.library.resolve(req.params.ref)
    if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no template "${req.params.ref}" on this host`)
    return await host.templates.remove(t.id, authOf(req))
  })

  api.head('/v1/blobs/:digest', { config: { swagger: { exposeHeadRoute: true } }, schema: { operationId: 'hasBlob', summary: 'Whether this host holds a template\'s image file', params: blobParams } }, async (req, reply) => {
    void reply.status(host.library.blobsInUse().has(req.params.digest) && await host.blobs.has(req.params.digest) ? 200 : 404)
    return ''
  })

  api.put('/v1/blobs/:digest', { bodyLimit: MAX_BLOB_BYTES, schema: { operationId: 'putBlob', ...media({ upload: true }), summary: 'Upload an image file (a template\'s kernel, initramfs or disk); kept only if it hashes to its digest. An owner\'s count against its quota until a template of theirs uses them', ...signedBy('any key', 'blob.put on the digest'), params: blobParams, response: { 201: z.object({ digest: z.string(), size: z.number() }), ...errors } } }, async (req, reply) => {
    if (!(req.body instanceof Readable)) throw new XenosError('UNSUPPORTED_MEDIA_TYPE', 'send the blob as application/octet-stream')
    const length = req.headers['content-length']
    const size = await host.templates.putBlob(req.params.digest, length === undefined ? undefined : Number(length), req.body, authOf(req))
    void reply.status(201)
    return { digest: req.params.digest, size }
  })

  api.get('/v1/blobs/:digest', { schema: { operationId: 'getBlob', ...media({ file: 200 }), summary: 'Download an image file of a template this host holds (data files: GET /v1/data/file)', params: blobParams } }, async (req, reply) => {
    if (!host.library.blobsInUse().has(req.params.digest) || !await host.blobs.has(req.params.digest)) throw new XenosError('TEMPLATE_NOT_FOUND', `no template on this host has an image file ${req.params.digest}`)
    void reply.type('application/octet-stream').header('content-length', await host.blobs.size(req.params.digest))
    return createReadStream(host.blobs.path(req.params.digest))
  })
}

interface TransferLike { owner?: string }

/** Which transfers the asker may see: a template's, and (signed) the signer's own data files. */
function transfersFor (host: ApiHost, req: FastifyRequest): (t: TransferLike) => boolean {
  const auth = maybeAuthOf(req)
  const who = auth === undefined ? undefined : host.verifier.verify(auth, { action: 'transfers', target: host.overlay.peerId, params: {} })
  return t => t.owner === undefined || t.owner === who
}

const ID_SHAPES = { host: /^12D3Koo[1-9A-HJ-NP-Za-km-z]{45}$/, template: /^sha256:[0-9a-f]{64}$/, instance: INSTANCE_ID_PATTERN } as const

/** A search the cache cannot answer may still name something by id or name: ask the DHT. */
async function lookupExact (host: ApiHost, q: string, kind: Advert['kind'] | undefined, fromCache: boolean): Promise<Advert[]> {
  const kinds = kind === undefined ? (['template', 'instance', 'host'] as const) : [kind]
  const found = await Promise.all(kinds.map(async k => {
    if (ID_SHAPES[k].test(q)) return await host.overlay.lookup(k, q, { fromCache })
    return k === 'host' ? undefined : await host.overlay.lookupName(k, q, { fromCache })
  }))
  return found.filter((a): a is Advert => a !== undefined)
}
