import { z } from 'zod'
import { applyRequestSchema, deploymentViewSchema, supervisionSchema } from '../core/index.ts'
import type { ApiHost } from './api-host.ts'
import type { Api } from './app.ts'
import { authOf, signedBy, signedInBody } from './auth.ts'
import { media } from './openapi.ts'
import { withProgress } from './events.ts'
import { errorResponses as errors } from './schemas.ts'

const nameParams = z.strictObject({ name: z.string().min(1).max(63) })

/** Descriptions of whole deployments: applied, shown and terminated on the host that supervises them. */
export function registerDeploymentRoutes (api: Api, host: ApiHost): void {
  api.post('/v1/deployments', {
    schema: {
      operationId: 'applyDeployment',
      ...media({ progress: true }), ...signedInBody('owner', 'the grant in the body: the owner\'s signature over the description\'s digest and the hosts that supervise it'),
      summary: 'Run a description (see docs/descriptions.md), or update a deployment that runs to it: its grant, signed by its owner over the text\'s digest, names the hosts that supervise it (an update keeps those it has); applied here, or relayed to the one of them that acts for it now. With `Accept: text/event-stream`: the deployment after each step as `progress`, then `result` or `error`',
      body: applyRequestSchema,
      response: { 200: deploymentViewSchema, ...errors },
    },
  }, async (req, reply) => await withProgress(req, reply, 200, async progress => await host.deployments.directory.apply(req.body, progress)))

  api.get('/v1/deployments', {
    schema: { operationId: 'listDeployments', summary: 'The signer\'s deployments this host supervises', ...signedBy('owner', 'deployments on this host\'s id'), response: { 200: z.object({ deployments: z.array(deploymentViewSchema) }), ...errors } },
  }, async req => {
    const owner = host.verifier.verify(authOf(req), { action: 'deployments', target: host.overlay.peerId, params: {} })
    return { deployments: host.deployments.list(owner) }
  })

  api.get('/v1/deployments/:name/supervisors', {
    schema: {
      operationId: 'locateDeployment',
      summary: 'Where a deployment of `owner` is supervised: the host acting for it now and every host that holds it, from this host\'s copy or a host that announces one (sign requests about it for the acting host)',
      params: nameParams,
      querystring: z.strictObject({ owner: z.string().min(1).max(64) }),
      response: { 200: supervisionSchema, ...errors },
    },
  }, async req => await host.deployments.directory.where(req.query.owner, req.params.name))

  api.get('/v1/deployments/:name', {
    schema: { operationId: 'getDeployment', summary: 'One of the signer\'s deployments: each component with its state, instances and last event (relayed to the host the request is signed for)', ...signedBy('owner', 'deployment.get on the name'), params: nameParams, response: { 200: deploymentViewSchema, ...errors } },
  }, async req => await host.deployments.directory.show(req.params.name, authOf(req)))

  api.post('/v1/deployments/:name/terminate', {
    schema: {
      operationId: 'terminateDeployment',
      ...media({ progress: true }),
      summary: 'End every instance of one of the signer\'s deployments, in the reverse of the order they started in (relayed to the host the request is signed for). With `Accept: text/event-stream`: `progress` after each step',
      ...signedBy('owner', 'deployment.terminate on the name'),
      params: nameParams,
      response: { 200: deploymentViewSchema, ...errors },
    },
  }, async (req, reply) => await withProgress(req, reply, 200, async progress => await host.deployments.directory.terminate(req.params.name, authOf(req), progress)))
}
