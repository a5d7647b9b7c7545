import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import { z } from 'zod'
import { collectResultSchema, dataFileViewSchema, formatDataUri, instanceIdSchema, parseDataUri, taskViewSchema, XenosError } from '../core/index.ts'
import type { ApiHost } from './api-host.ts'
import type { Api } from './app.ts'
import { authOf, signedBy } from './auth.ts'
import { media } from './openapi.ts'
import { errorResponses } from './schemas.ts'

/** Largest file accepted (chunk indexes bound a blob to 64 GiB). */
const MAX_FILE_BYTES = 64 * 2 ** 30

const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 is 64 lowercase hex digits')
const uriSchema = z.string().min(1).max(2048).describe('data://OWNER/PATH')
const uploadIdParams = z.strictObject({ id: z.string().regex(/^u-[0-9a-f]{32}$/, 'an upload id looks like u- and 32 hex digits') })
const uploadSchema = z.object({ id: z.string(), uri: z.string(), size: z.number(), sha256: z.string(), offset: z.number() })
const grantSchema = z.object({ owner: z.string(), grantee: z.string(), rights: z.enum(['read', 'write']), createdAt: z.number() })
const granteeSchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'a grantee is an owner id (43 characters)')

/** The signer of a request signed for `action` on `target` with `params`, checked once. */
function signer (host: ApiHost, req: FastifyRequest, action: string, target: string, params: unknown): string {
  const auth = authOf(req)
  host.verifier.verify(auth, { action, target, params })
  return auth.owner
}

/**
 * The data repository's routes: resumable uploads (start, send bytes from an offset, ask where
 * one stands, complete, cancel), download, listing, deletion and grants. Every request is
 * signed by the owner of the data or a key the owner granted access.
 */
export function registerDataRoutes (api: Api, host: ApiHost): void {
  api.post('/v1/data/uploads', {
    schema: {
      operationId: 'startUpload',
      summary: 'Begin an upload of a file to data://OWNER/PATH (signed `data.put` on the uri, params `{size, sha256}`); send its bytes with PUT, then complete it',
      ...signedBy('owner', 'data.put on the uri, params {size, sha256}'),
      body: z.strictObject({ uri: uriSchema, size: z.number().int().min(0).max(MAX_FILE_BYTES), sha256: sha256Schema }),
      response: { 201: uploadSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const ref = parseDataUri(req.body.uri)
    const who = signer(host, req, 'data.put', formatDataUri(ref), { size: req.body.size, sha256: req.body.sha256 })
    void reply.status(201)
    return await host.data.startUpload(who, ref.owner, ref.path, req.body.size, req.body.sha256)
  })

  api.get('/v1/data/uploads/:id', {
    schema: { operationId: 'getUpload', summary: 'Where an upload stands: the next bytes go at `offset` (signed `data.upload` on the id)', ...signedBy('owner', 'data.upload on the upload id'), params: uploadIdParams, response: { 200: uploadSchema, ...errorResponses } },
  }, async req => await host.data.upload(signer(host, req, 'data.upload', req.params.id, {}), req.params.id))

  api.put('/v1/data/uploads/:id', {
    bodyLimit: MAX_FILE_BYTES,
    schema: {
      operationId: 'sendUploadBytes',
      ...media({ upload: true }),
      summary: 'Send bytes of an upload from `offset`, which must be what it holds so far (application/octet-stream; signed `data.upload` on the id, params `{offset}`). What arrives is kept even if the request breaks off',
      ...signedBy('owner', 'data.upload on the upload id, params {offset}'),
      params: uploadIdParams,
      querystring: z.strictObject({ offset: z.coerce.number().int().min(0).max(MAX_FILE_BYTES) }),
      response: { 200: uploadSchema, ...errorResponses },
    },
  }, async req => {
    const who = signer(host, req, 'data.upload', req.params.id, { offset: req.query.offset })
    if (!(req.body instanceof Readable)) throw new XenosError('UNSUPPORTED_MEDIA_TYPE', 'send the bytes of an upload as application/octet-stream')
    return await host.data.write(who, req.params.id, req.query.offset, req.body)
  })

  api.post('/v1/data/uploads/:id/complete', {
    schema: { operationId: 'completeUpload', summary: 'Turn a fully sent upload into a file, if its bytes hash to the SHA-256 declared (signed `data.complete` on the id)', ...signedBy('owner', 'data.complete on the upload id'), params: uploadIdParams, response: { 201: dataFileViewSchema, ...errorResponses } },
  }, async (req, reply) => {
    const file = await host.data.complete(signer(host, req, 'data.complete', req.params.id, {}), req.params.id)
    void reply.status(201)
    return file
  })

  api.delete('/v1/data/uploads/:id', {
    schema: { operationId: 'cancelUpload', summary: 'Drop an upload under way and its bytes (signed `data.cancel` on the id)', ...signedBy('owner', 'data.cancel on the upload id'), params: uploadIdParams, response: { 204: z.null(), ...errorResponses } },
  }, async (req, reply) => {
    await host.data.cancel(signer(host, req, 'data.cancel', req.params.id, {}), req.params.id)
    void reply.status(204)
    return null
  })

  api.get('/v1/data/files', {
    schema: {
      operationId: 'listDataFiles',
      summary: 'Files in data://OWNER/ or under data://OWNER/DIR on this host (signed `data.list` on the uri)',
      ...signedBy('owner', 'data.list on the uri'),
      querystring: z.strictObject({ uri: uriSchema, limit: z.coerce.number().int().min(1).max(100_000).default(10_000) }),
      response: { 200: z.object({ files: z.array(dataFileViewSchema) }), ...errorResponses },
    },
  }, async req => {
    const ref = parseDataUri(req.query.uri, undefined, true)
    const who = signer(host, req, 'data.list', formatDataUri(ref), {})
    return { files: host.data.list(who, ref.owner, ref.path, req.query.limit) }
  })

  api.get('/v1/data/file', {
    schema: {
      operationId: 'downloadDataFile',
      ...media({ file: 200 }),
      summary: 'Download a file, held by this host or fetched from the one that holds it (signed `data.get` on the uri); its SHA-256 is in the `x-xenos-sha256` header',
      ...signedBy('owner', 'data.get on the uri'),
      querystring: z.strictObject({ uri: uriSchema }),
    },
  }, async (req, reply) => {
    const ref = parseDataUri(req.query.uri)
    const { file, blobPath, release } = await host.dataAccess.content(signer(host, req, 'data.get', formatDataUri(ref), {}), { auth: authOf(req) }, ref)
    void reply.type('application/octet-stream').header('content-length', file.size).header('x-xenos-sha256', file.sha256)
    // A copy fetched from the file's holder goes once sent.
    reply.raw.once('close', () => { void release() })
    return createReadStream(blobPath)
  })

  api.delete('/v1/data/file', {
    schema: { operationId: 'deleteDataFile', summary: 'Delete a file (signed `data.delete` on the uri)', ...signedBy('owner', 'data.delete on the uri'), querystring: z.strictObject({ uri: uriSchema }), response: { 204: z.null(), ...errorResponses } },
  }, async (req, reply) => {
    const ref = parseDataUri(req.query.uri)
    host.data.remove(signer(host, req, 'data.delete', formatDataUri(ref), {}), ref.owner, ref.path)
    void reply.status(204)
    return null
  })

  api.post('/v1/instances/:id/collect', {
    schema: {
      operationId: 'collectOutputs',
      summary: 'Store the files an ended instance left on its outputs disk (/out) in the owner\'s repository under `prefix` (signed `collect` on the instance, params `{prefix}`); links and other non-files are refused and listed',
      ...signedBy('owner', 'collect on the instance id, params {prefix}, for the host it runs on'),
      params: z.strictObject({ id: instanceIdSchema }),
      body: z.strictObject({ prefix: z.string().min(1).max(1024) }),
      response: { 200: collectResultSchema, ...errorResponses },
    },
  }, async req => await host.outputs.collect(req.params.id, req.body.prefix, authOf(req)))

  api.get('/v1/tasks', {
    schema: {
      operationId: 'listTasks',
      summary: 'The signer\'s tasks run on this host, newest first (signed `task.list` on "tasks")',
      ...signedBy('any key', 'task.list on "tasks"'),
      querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(10_000).default(100) }),
      response: { 200: z.object({ tasks: z.array(taskViewSchema) }), ...errorResponses },
    },
  }, async req => ({ tasks: host.tasks.list(authOf(req), req.query.limit) }))

  api.get('/v1/tasks/:id', {
    schema: {
      operationId: 'getTask',
      summary: 'A task: its state, how it ended and the outputs it stored, asked of the host that ran it (signed `task.get` on the id, for that host: see GET /v1/tasks/{id}/host)',
      ...signedBy('owner', 'task.get on the task id, for the host that ran it'),
      params: z.strictObject({ id: instanceIdSchema }),
      response: { 200: taskViewSchema, ...errorResponses },
    },
  }, async req => await host.tasks.get(req.params.id, authOf(req)))

  api.get('/v1/tasks/:id/host', {
    schema: {
      operationId: 'locateTask',
      summary: 'The host that runs or ran a task: where a request about it is to be signed for',
      params: z.strictObject({ id: instanceIdSchema }),
      response: { 200: z.object({ host: z.string() }), ...errorResponses },
    },
  }, async req => ({ host: await host.tasks.runnerOf(req.params.id) }))

  api.get('/v1/data/grants', {
    schema: { operationId: 'listGrants', summary: 'The keys the signer granted access to its data on this host (signed `data.grants` on data://SIGNER)', ...signedBy('any key', 'data.grants on data://SIGNER'), response: { 200: z.object({ grants: z.array(grantSchema) }), ...errorResponses } },
  }, async req => {
    const owner = authOf(req).owner
    signer(host, req, 'data.grants', `data://${owner}`, {})
    return { grants: host.data.grants(owner) }
  })

  api.put('/v1/data/grants', {
    schema: {
      operationId: 'grantAccess',
      summary: 'Let another key read (or also write) the signer\'s data on this host (signed `data.grant` on data://SIGNER, params `{grantee, rights}`)',
      ...signedBy('any key', 'data.grant on data://SIGNER, params {grantee, rights}'),
      body: z.strictObject({ grantee: granteeSchema, rights: z.enum(['read', 'write']) }),
      response: { 200: grantSchema, ...errorResponses },
    },
  }, async req => {
    const owner = authOf(req).owner
    signer(host, req, 'data.grant', `data://${owner}`, req.body)
    return host.data.grant(owner, req.body.grantee, req.body.rights)
  })

  api.delete('/v1/data/grants/:grantee', {
    schema: { operationId: 'revokeGrant', summary: 'Take back a grant (signed `data.revoke` on data://SIGNER, params `{grantee}`)', ...signedBy('any key', 'data.revoke on data://SIGNER, params {grantee}'), params: z.strictObject({ grantee: granteeSchema }), response: { 204: z.null(), ...errorResponses } },
  }, async (req, reply) => {
    const owner = authOf(req).owner
    signer(host, req, 'data.revoke', `data://${owner}`, { grantee: req.params.grantee })
    host.data.revoke(owner, req.params.grantee)
    void reply.status(204)
    return null
  })
}
