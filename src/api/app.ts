import swagger from '@fastify/swagger'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod'
import type { Logger } from 'pino'
import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import { z } from 'zod'
import { INSTANCE_ID_PATTERN, nameRecordSchema, toXenosError, XenosError, type Advert } from '../core/index.ts'
import { parseManifest, validateManifest } from '../images/index.ts'
import { deriveParamsSchema, instanceMetricsSchema, instanceViewSchema, drainResultSchema, migrationResultSchema, snapshotViewSchema, XENOS_VERSION, type Host } from '../node/index.ts'
import { AUTH_HEADER, authOf } from './auth.ts'
import { registerDataRoutes } from './data.ts'
import { prometheusText } from './metrics.ts'
import {
  controlParams, deployBody, deployResultSchema, errorResponses, hostInfoSchema, importTemplateBody, instanceListQuery, instanceParams,
  blobParams, connectBody, drainBody, logsQuery, migrateBody, nameListQuery, namePublishSchema, nameRecordBody, peersSchema, refParams, searchQuery, searchResultSchema, snapshotParams, templateRemovalSchema, templateSummarySchema, transferSchema,
} from './schemas.ts'

/** Largest blob accepted in one upload (a template's disk image). */
const MAX_BLOB_BYTES = 64 * 1024 * 1024 * 1024


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

function searchView (a: Advert): z.infer<typeof searchResultSchema>['results'][number] {
  return { kind: a.kind, id: a.id, host: a.host, issuedAt: a.issuedAt, expiresAt: a.expiresAt, body: a.body }
}

const errors = errorResponses

export { AUTH_HEADER }

/** Builds the HTTP API of one host (not listening yet, so tests can `inject`). */
export async function buildApp (host: Host, log?: Logger): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = log ?? host.log.child({ component: 'api' })
  const app = Fastify({ loggerInstance: logger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: 1024 * 1024 })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  await app.register(swagger, {
    openapi: { info: { title: 'Xenos host API', version: XENOS_VERSION, description: 'Search, deploy, control and measure services on a Xenos cloud through any host.' } },
    transform: jsonSchemaTransform,
  })

  app.setErrorHandler((err: FastifyError, _req, reply) => {
    const e = err.validation !== undefined || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.statusCode === 400
      ? new XenosError('INVALID_ARGUMENT', err.message)
      : toXenosError(err)
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
    void reply.type('text/plain; version=0.0.4')
    return await prometheusText(host)
  })

  api.get('/v1/host', { schema: { summary: 'This host', response: { 200: hostInfoSchema } } }, async () => host.info())

  api.get('/v1/peers', { schema: { summary: 'Connected peers and advertised hosts', response: { 200: peersSchema } } }, async () => {
    const connected = host.overlay.node.getPeers().map(p => ({
      id: p.toString(),
      addrs: host.overlay.node.getConnections(p).map(c => c.remoteAddr.toString()),
    }))
    const hosts = host.overlay.search({ kind: 'host' }).flatMap(a => a.kind === 'host' ? [{ ...a.body, id: a.host, expiresAt: a.expiresAt }] : [])
    return { connected, hosts }
  })

  api.get('/v1/templates', { schema: { summary: 'Templates held by this host', response: { 200: z.object({ templates: z.array(templateSummarySchema) }) } } }, async () => ({
    templates: host.library.list().map(t => ({
      id: t.id, name: t.manifest.name, version: t.manifest.version, driver: t.manifest.driver, tags: t.manifest.tags, resources: t.manifest.resources, hosts: [host.overlay.peerId],
    })),
  }))

  api.put('/v1/names', { schema: { summary: 'Publish a template://owner/name/tag record signed by its owner, to every host', body: nameRecordBody, response: { 200: namePublishSchema, ...errors } } }, async req => await host.publishName(req.body.record))

  api.get('/v1/names', { schema: { summary: 'Template names known to this host (every host knows them all)', querystring: nameListQuery, response: { 200: z.object({ names: z.array(nameRecordSchema) }) } } }, async req => ({
    names: host.names.list(req.query.owner),
  }))

  api.post('/v1/templates', { schema: { summary: 'Import a template manifest', body: importTemplateBody, response: { 201: templateSummarySchema, ...errors } } }, async (req, reply) => {
    const manifest = 'text' in req.body ? parseManifest(req.body.text) : validateManifest(req.body.manifest)
    const t = await host.importTemplate(manifest)
    void reply.status(201)
    return { ...await host.cloud.resolveTemplate(t.id), manifest: t.manifest }
  })

  api.get('/v1/templates/:ref', { schema: { summary: 'Resolve a template by id, id prefix, name or name:version, here or on the overlay', params: refParams, response: { 200: templateSummarySchema, ...errors } } }, async req => {
    const summary = await host.cloud.resolveTemplate(req.params.ref)
    const local = host.library.get(summary.id)
    return local === undefined ? summary : { ...summary, manifest: local.manifest }
  })

  api.post('/v1/templates/:ref/pull', { schema: { summary: 'Fetch a template and its image files onto this host from the hosts that hold them (GET /v1/transfers shows progress)', params: refParams, response: { 200: templateSummarySchema, ...errors } } }, async req => {
    const summary = await host.cloud.resolveTemplate(req.params.ref)
    await host.cloud.ensureTemplate(summary.id)
    return await host.cloud.resolveTemplate(summary.id)
  })

  api.get('/v1/transfers/events', { schema: { summary: 'Server-sent events: `progress` as image files arrive, `done` when each ends (with `error` if it failed)' } }, async (req, reply) => {
    const send = eventStream(reply)
    const onProgress = (t: unknown): void => { send('progress', t) }
    const onDone = (t: unknown): void => { send('done', t) }
    host.cloud.fetcher.on('progress', onProgress)
    host.cloud.fetcher.on('done', onDone)
    for (const t of host.cloud.fetcher.transfers.values()) onProgress(t)
    req.raw.once('close', () => {
      host.cloud.fetcher.off('progress', onProgress)
      host.cloud.fetcher.off('done', onDone)
    })
  })

  api.get('/v1/transfers', { schema: { summary: 'Image files this host is fetching now', response: { 200: z.object({ transfers: z.array(transferSchema) }) } } }, async () => ({
    transfers: [...host.cloud.fetcher.transfers.values()],
  }))

  api.delete('/v1/templates/:ref', { schema: { summary: 'Remove a template from this host, and the image files no other template needs', params: refParams, response: { 200: templateRemovalSchema, ...errors } } }, async req => {
    const t = host.library.resolve(req.params.ref)
    if (t === undefined) throw new XenosError('TEMPLATE_NOT_FOUND', `no template "${req.params.ref}" on this host`)
    return await host.removeTemplate(t.id)
  })

  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => { done(null, payload) })
  registerDataRoutes(api, host)

  api.head('/v1/blobs/:digest', { schema: { summary: 'Whether this host holds a blob', params: blobParams } }, async (req, reply) => {
    void reply.status(await host.blobs.has(req.params.digest) ? 200 : 404)
    return ''
  })

  api.put('/v1/blobs/:digest', { bodyLimit: MAX_BLOB_BYTES, schema: { summary: 'Upload a blob (a template\'s kernel, initramfs or disk); kept only if it hashes to its digest', params: blobParams, response: { 201: z.object({ digest: z.string(), size: z.number() }), ...errors } } }, async (req, reply) => {
    if (!(req.body instanceof Readable)) throw new XenosError('INVALID_ARGUMENT', 'send the blob as application/octet-stream')
    await host.blobs.put(req.params.digest, req.body)
    void reply.status(201)
    return { digest: req.params.digest, size: await host.blobs.size(req.params.digest) }
  })

  api.get('/v1/blobs/:digest', { schema: { summary: 'Download a blob this host holds (a template\'s kernel, initramfs or disk)', params: blobParams } }, async (req, reply) => {
    if (!await host.blobs.has(req.params.digest)) throw new XenosError('TEMPLATE_NOT_FOUND', `this host holds no blob ${req.params.digest}`)
    void reply.type('application/octet-stream').header('content-length', await host.blobs.size(req.params.digest))
    return createReadStream(host.blobs.path(req.params.digest))
  })

  api.get('/v1/search', { schema: { summary: 'Search adverts of hosts, templates and instances', querystring: searchQuery, response: { 200: searchResultSchema, ...errors } } }, async req => {
    const { q, kind, host: onHost, waitMs, from } = req.query
    const tags = tagsOf(req.query.tag)
    const query = { ...(q === undefined ? {} : { text: q }), ...(kind === undefined ? {} : { kind }), ...(tags === undefined ? {} : { tags }), ...(onHost === undefined ? {} : { host: onHost }) }
    const exact = q !== undefined && q !== ''
    if (from === 'dht') {
      if (!exact) throw new XenosError('INVALID_ARGUMENT', 'a DHT search needs q: an exact id or name')
      return { results: (await lookupExact(host, q, kind, false)).map(searchView) }
    }
    let results = await host.overlay.cache.waitFor(query, waitMs)
    if (results.length === 0 && exact && from === 'any') results = await lookupExact(host, q, kind, true)
    return { results: results.map(searchView) }
  })

  api.post('/v1/instances', {
    schema: {
      summary: 'Deploy instances of a template (signed by the owner). With `Accept: text/event-stream`, server-sent events follow it: `progress` with every host\'s part as it changes, then `result` (the 201 body) or `error`',
      body: deployBody,
      response: { 201: deployResultSchema, ...errors },
    },
  }, async (req, reply) => {
    const { template, wait, waitMs, ...params } = req.body
    const auth = authOf(req)
    const options = { wait, ...(waitMs === undefined ? {} : { waitMs }) }
    return await withProgress(req, reply, 201, async progress => await host.cloud.deploy(template, params, auth, { ...options, ...(progress === undefined ? {} : { onProgress: parts => { progress({ hosts: parts }) } }) }))
  })

  api.get('/v1/instances', { schema: { summary: 'Instances on this host and advertised by others', querystring: instanceListQuery, response: { 200: z.object({ instances: z.array(instanceViewSchema) }) } } }, async req => {
    const { owner, host: onHost, state } = req.query
    const list = host.cloud.list({ ...(owner === undefined ? {} : { owner }), ...(onHost === undefined ? {} : { host: onHost }) })
    return { instances: state === undefined ? list : list.filter(v => v.state === state) }
  })

  api.get('/v1/instances/:id', { schema: { summary: 'One instance, asked of the host that runs it', params: instanceParams, response: { 200: instanceViewSchema, ...errors } } }, async req => await host.cloud.get(req.params.id))

  api.post('/v1/instances/:id/:action', { schema: { summary: 'Start, stop, pause, resume or destroy an instance (signed by its owner)', params: controlParams, response: { 200: instanceViewSchema, 204: z.null(), ...errors } } }, async (req, reply) => {
    const view = await host.cloud.control(req.params.id, req.params.action, authOf(req))
    if (view === undefined) {
      void reply.status(204)
      return null
    }
    return view
  })

  api.post('/v1/instances/:id/snapshot', { schema: { summary: 'Save a VM\'s memory and disk as a snapshot new instances can start from (signed by its owner)', params: instanceParams, response: { 201: snapshotViewSchema, ...errors } } }, async (req, reply) => {
    const snap = await host.cloud.snapshot(req.params.id, authOf(req))
    void reply.status(201)
    return snap
  })

  api.post('/v1/instances/:id/migrate', {
    schema: {
      summary: 'Move a running VM to another host while it runs: its memory is copied live; its disk stays and is served to the new host, or with `copyDisk` is copied there first (signed by its owner over `to` and `copyDisk`). With `Accept: text/event-stream`: `progress` events (phase, disk and memory copied, dirty rate, expected downtime), then `result` or `error`',
      params: instanceParams,
      body: migrateBody,
      response: { 200: migrationResultSchema, ...errors },
    },
  }, async (req, reply) => {
    const auth = authOf(req)
    return await withProgress(req, reply, 200, async progress => await host.migrations.migrate(req.params.id, req.body.to, req.body.copyDisk, auth, progress))
  })

  api.post('/v1/host/drain', {
    schema: {
      summary: 'Move every running instance on this host to other hosts, one at a time, live; the host takes no new instances until undrained. With `Accept: text/event-stream`: `progress` events (instance, destination, its migration), then `result` or `error`',
      body: drainBody,
      response: { 200: drainResultSchema, ...errors },
    },
  }, async (req, reply) => await withProgress(req, reply, 200, async progress => await host.migrations.drain(req.body.to ?? null, progress)))

  api.post('/v1/host/undrain', { schema: { summary: 'Let a drained host take instances again', response: { 204: z.null(), ...errors } } }, async (_req, reply) => {
    host.migrations.undrain()
    void reply.status(204)
    return null
  })

  api.post('/v1/connect', {
    schema: {
      summary: 'Open a local port that reaches a service through the overlay, on whichever host runs it now (it follows migrations). Answers with server-sent events: `listening` (address, port), then `stats` as connections are made; the port closes when the request does',
      body: connectBody,
    },
  }, async (req, reply) => {
    const { target, endpoint, address, port } = req.body
    const listener = await host.services.listen({ target, endpoint }, address, port)
    const send = eventStream(reply)
    send('listening', { address: listener.address, port: listener.port, target })
    let last = ''
    const timer = setInterval(() => {
      const stats = listener.stats()
      const now = JSON.stringify(stats)
      if (now !== last) send('stats', stats)
      last = now
    }, 500)
    req.raw.once('close', () => {
      clearInterval(timer)
      void listener.close()
    })
  })

  api.post('/v1/instances/:id/derive', { schema: { summary: 'Make a tailored template from a stopped or suspended VM: its template with the changes on its disk (signed by its owner)', params: instanceParams, body: deriveParamsSchema, response: { 201: templateSummarySchema, ...errors } } }, async (req, reply) => {
    const t = await host.cloud.derive(req.params.id, req.body, authOf(req))
    void reply.status(201)
    return t
  })

  api.get('/v1/snapshots', { schema: { summary: 'Snapshots held by this host', response: { 200: z.object({ snapshots: z.array(snapshotViewSchema) }) } } }, async () => ({
    snapshots: host.store.snapshots.list(),
  }))

  api.delete('/v1/snapshots/:id', { schema: { summary: 'Delete a snapshot held by this host (signed by its owner)', params: snapshotParams, response: { 204: z.null(), ...errors } } }, async (req, reply) => {
    await host.cloud.deleteSnapshot(req.params.id, authOf(req))
    void reply.status(204)
    return null
  })

  api.get('/v1/instances/:id/metrics', { schema: { summary: 'CPU, memory and uptime of an instance', params: instanceParams, response: { 200: instanceMetricsSchema, ...errors } } }, async req => await host.cloud.metrics(req.params.id))

  api.get('/v1/instances/:id/logs', { schema: { summary: 'Last lines of an instance\'s output (signed by its owner)', params: instanceParams, querystring: logsQuery, response: { 200: z.object({ text: z.string() }), ...errors } } }, async req => ({
    text: await host.cloud.logs(req.params.id, req.query.lines, authOf(req)),
  }))

  return app
}

/**
 * Runs `work` for a request that may want to watch it: with `Accept: text/event-stream` the answer
 * is a stream of `progress` events, then `result` (what the JSON answer would be) or `error`;
 * otherwise the JSON answer with `status`.
 */
async function withProgress<T> (req: FastifyRequest, reply: FastifyReply, status: number, work: (progress?: (p: unknown) => void) => Promise<T>): Promise<T | undefined> {
  if (req.headers.accept?.includes('text/event-stream') !== true) {
    const result = await work()
    void reply.status(status)
    return result
  }
  const send = eventStream(reply)
  try {
    send('result', await work(p => { send('progress', p) }))
  } catch (err) {
    const e = toXenosError(err)
    if (e.code === 'INTERNAL') req.log.error({ err }, 'request failed')
    send('error', { error: e.toJSON() })
  }
  reply.raw.end()
  return undefined
}

/** Answers with server-sent events from here on; returns the function that sends one. */
function eventStream (reply: FastifyReply): (event: string, data: unknown) => void {
  reply.hijack()
  reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
  return (event, data) => { reply.raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`) }
}

const ID_SHAPES = { host: /^12D3Koo[1-9A-HJ-NP-Za-km-z]{45}$/, template: /^sha256:[0-9a-f]{64}$/, instance: INSTANCE_ID_PATTERN } as const

/** A search the cache cannot answer may still name something by id or name: ask the DHT. */
async function lookupExact (host: Host, q: string, kind: Advert['kind'] | undefined, fromCache: boolean): Promise<Advert[]> {
  const kinds = kind === undefined ? (['template', 'instance', 'host'] as const) : [kind]
  const found = await Promise.all(kinds.map(async k => {
    if (ID_SHAPES[k].test(q)) return await host.overlay.lookup(k, q, { fromCache })
    return k === 'host' ? undefined : await host.overlay.lookupName(k, q, { fromCache })
  }))
  return found.filter((a): a is Advert => a !== undefined)
}
