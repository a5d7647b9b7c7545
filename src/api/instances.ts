import type { FastifyRequest } from 'fastify'
import { z } from 'zod'
import { bidParamsSchema, deployResultSchema, deriveParamsSchema, instanceMetricsSchema, instanceViewSchema, marketViewSchema, migrationResultSchema, placementPlanSchema, replicaSchema, replicateRequestSchema, snapshotViewSchema, templateIdSchema } from '../core/index.ts'
import type { ApiHost } from './api-host.ts'
import type { Api } from './app.ts'
import { withProgress } from './events.ts'
import { authOf, signedBy, signedInBody } from './auth.ts'
import { media } from './openapi.ts'
import {
  controlParams, deployBody, deployInProgressSchema, errorResponses as errors, instanceListQuery, instanceParams, logsQuery, migrateBody, moveInProgressSchema, snapshotParams, templateSummarySchema,
} from './schemas.ts'

/**
 * Whose work in progress a signed `action` on this host may see: the signer's own, or (undefined)
 * everyone's, for the host's operator.
 */
function whoseTo (host: ApiHost, req: FastifyRequest, action: string): string | undefined {
  const who = host.verifier.verify(authOf(req), { action, target: host.overlay.peerId, params: {} })
  return host.verifier.isOperator(who) ? undefined : who
}

/** Deploys, instances and snapshots: every action is signed by the owner, for the host that carries it out. */
export function registerInstanceRoutes (api: Api, host: ApiHost): void {
  api.get('/v1/placement', {
    schema: {
      operationId: 'planPlacement',
      summary: 'Where `count` instances of a template fit now: the hosts with most room that this host trusts, and how many each. A client signs a deploy token for each',
      querystring: z.strictObject({ template: templateIdSchema, count: z.coerce.number().int().min(1).max(100).default(1) }),
      response: { 200: placementPlanSchema, ...errors },
    },
  }, async req => host.deployer.plan(await host.catalog.resolve(req.query.template), req.query.count))

  api.post('/v1/instances', {
    schema: {
      operationId: 'deployInstances',
      ...media({ progress: true }),
      summary: 'Deploy instances of a template: `parts` holds the owner\'s signed token for each host (see docs/security.md), which names the host, how many instances and their ids, and the digest of `spec`. With `Accept: text/event-stream`, server-sent events follow it: `progress` with every host\'s part as it changes, then `result` (the 201 body) or `error`',
      ...signedInBody('owner', 'a deploy token for each host in the body: host, template, key, count, the digest of spec'),
      body: deployBody,
      response: { 201: deployResultSchema, ...errors },
    },
  }, async (req, reply) => {
    const { template, spec, parts, wait, waitMs } = req.body
    const options = { wait, ...(waitMs === undefined ? {} : { waitMs }) }
    return await withProgress(req, reply, 201, async progress => await host.deployer.deploy(template, spec, parts, { ...options, ...(progress === undefined ? {} : { onProgress: p => { progress({ hosts: p }) } }) }))
  })

  api.get('/v1/instances', { schema: { operationId: 'listInstances', summary: 'Instances on this host and advertised by others, as their adverts show them (each one\'s own host shows its owner more: GET /v1/instances/{id})', querystring: instanceListQuery, response: { 200: z.object({ instances: z.array(instanceViewSchema) }) } } }, async req => {
    const { owner, host: onHost, state } = req.query
    const list = host.router.list({ ...(owner === undefined ? {} : { owner }), ...(onHost === undefined ? {} : { host: onHost }) })
    return { instances: state === undefined ? list : list.filter(v => v.state === state) }
  })

  api.get('/v1/instances/:id/host', { schema: { operationId: 'locateInstance', summary: 'The host an instance runs on (the one its owner placed it on last): where a request about it is to be signed for', params: instanceParams, response: { 200: z.object({ host: z.string() }), ...errors } } }, async req => ({
    host: await host.router.locate(req.params.id),
  }))

  api.get('/v1/instances/:id', { schema: { operationId: 'getInstance', summary: 'One instance, asked of the host that runs it', ...signedBy('owner or operator', 'get on the instance id'), params: instanceParams, response: { 200: instanceViewSchema, ...errors } } }, async req => await host.router.get(req.params.id, authOf(req)))

  api.post('/v1/instances/:id/:action', { schema: { operationId: 'controlInstance', summary: 'Start, stop, pause, resume or destroy an instance', ...signedBy('owner', 'the action on the instance id'), params: controlParams, response: { 200: instanceViewSchema, 204: z.null(), ...errors } } }, async (req, reply) => {
    const view = await host.router.control(req.params.id, req.params.action, authOf(req))
    if (view === undefined) {
      void reply.status(204)
      return null
    }
    return view
  })

  api.post('/v1/instances/:id/snapshot', { schema: { operationId: 'snapshotInstance', summary: 'Save a VM\'s memory and disk as a snapshot new instances can start from', ...signedBy('owner', 'snapshot on the instance id'), params: instanceParams, response: { 201: snapshotViewSchema, ...errors } } }, async (req, reply) => {
    const snap = await host.router.snapshot(req.params.id, authOf(req))
    void reply.status(201)
    return snap
  })

  api.post('/v1/instances/:id/migrate', {
    schema: {
      operationId: 'migrateInstance',
      ...media({ progress: true }),
      summary: 'Move a running VM to another host while it runs: its memory is copied live; its disk stays and is served to the new host, or with `copyDisk` is copied there first. With `Accept: text/event-stream`: `progress` events (phase, disk and memory copied, dirty rate, expected downtime), then `result` or `error`',
      ...signedBy('owner', 'migrate on the instance id, params {to, copyDisk}, for the host it runs on'),
      params: instanceParams,
      body: migrateBody,
      response: { 200: migrationResultSchema, ...errors },
    },
  }, async (req, reply) => {
    const auth = authOf(req)
    return await withProgress(req, reply, 200, async progress => await host.migrations.migrate(req.params.id, req.body.to, req.body.copyDisk, auth, progress))
  })

  api.post('/v1/instances/:id/replicate', {
    schema: {
      operationId: 'replicateInstance',
      ...media({ progress: true }),
      summary: 'Start another instance of the same service on another host: booted from its template under its name, or from a snapshot of it taken now and moved there, disk and all. The host that runs the instance carries it out; the owner signs the replica\'s deploy token (and its move) in advance. With `Accept: text/event-stream`: the move\'s `progress` events, then `result` or `error`',
      ...signedBy('owner', 'replicate on the instance id, params {to, snapshot}, for the host it runs on'),
      params: instanceParams,
      body: replicateRequestSchema,
      response: { 200: replicaSchema, ...errors },
    },
  }, async (req, reply) => {
    const auth = authOf(req)
    return await withProgress(req, reply, 200, async progress => await host.replicas.replicate(req.params.id, req.body, auth, progress))
  })

  api.post('/v1/instances/:id/bid', {
    schema: {
      operationId: 'bidForInstance',
      summary: 'Open or change the bid that buys an instance its share of its host\'s CPU: `receipt` is the bank\'s receipt of a payment from the owner into the host\'s escrow (see the host\'s advert), added to what the bid holds; `seconds` how long all it holds is to last from now (changing it alone changes the rate, without a payment)',
      ...signedBy('owner', 'bid on the instance id, params the body, for the host it runs on'),
      params: instanceParams,
      body: bidParamsSchema,
      response: { 200: marketViewSchema, ...errors },
    },
  }, async req => await host.bidding.bid(req.params.id, req.body, authOf(req)))

  api.post('/v1/instances/:id/derive', { schema: { operationId: 'deriveTemplate', summary: 'Make a tailored template from a stopped or suspended VM: its template with the changes on its disk', ...signedBy('owner', 'derive on the instance id, params the body'), params: instanceParams, body: deriveParamsSchema, response: { 201: templateSummarySchema, ...errors } } }, async (req, reply) => {
    const t = await host.router.derive(req.params.id, req.body, authOf(req))
    void reply.status(201)
    return t
  })

  api.get('/v1/deploys', {
    schema: {
      operationId: 'listDeploys',
      summary: 'Deploys asked of this host under way, each host\'s part with its phase: the signer\'s (all of them, for the operator)',
      ...signedBy('any key', 'deploys on this host\'s peer id'),
      response: { 200: z.object({ deploys: z.array(deployInProgressSchema) }), ...errors },
    },
  }, async req => ({ deploys: host.deployer.inProgress(whoseTo(host, req, 'deploys')) }))

  api.get('/v1/migrations', {
    schema: {
      operationId: 'listMigrations',
      summary: 'Live migrations away from this host under way, with their phase and progress: the signer\'s instances\' (all of them, for the operator)',
      ...signedBy('any key', 'migrations on this host\'s peer id'),
      response: { 200: z.object({ migrations: z.array(moveInProgressSchema) }), ...errors },
    },
  }, async req => ({ migrations: host.migrations.inProgress(whoseTo(host, req, 'migrations')) }))

  api.get('/v1/snapshots', { schema: { operationId: 'listSnapshots', summary: 'Snapshots held by this host: the signer\'s (all of them, for the operator)', ...signedBy('any key', 'snapshots on this host\'s peer id'), response: { 200: z.object({ snapshots: z.array(snapshotViewSchema) }), ...errors } } }, async req => ({
    snapshots: host.router.snapshots(authOf(req)),
  }))

  api.delete('/v1/snapshots/:id', { schema: { operationId: 'deleteSnapshot', summary: 'Delete a snapshot held by this host', ...signedBy('owner or operator', 'snapshot.delete on the snapshot id'), params: snapshotParams, response: { 204: z.null(), ...errors } } }, async (req, reply) => {
    await host.router.deleteSnapshot(req.params.id, authOf(req))
    void reply.status(204)
    return null
  })

  api.get('/v1/instances/:id/metrics', { schema: { operationId: 'getInstanceMetrics', summary: 'CPU, memory, disk and network use and uptime of an instance', ...signedBy('owner or operator', 'metrics on the instance id'), params: instanceParams, response: { 200: instanceMetricsSchema, ...errors } } }, async req => await host.router.metrics(req.params.id, authOf(req)))

  api.get('/v1/instances/:id/logs', { schema: { operationId: 'getInstanceLogs', summary: 'Last lines of an instance\'s output', ...signedBy('owner', 'logs on the instance id'), params: instanceParams, querystring: logsQuery, response: { 200: z.object({ text: z.string(), next: z.number().describe('the byte to ask from (`from`) for what the instance prints next') }), ...errors } } }, async req => await host.router.logs(req.params.id, req.query.lines, req.query.from, authOf(req)))
}

