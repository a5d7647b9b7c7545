import { z } from 'zod'
import { allowanceId, allowanceSchema, bidParamsSchema, budgetViewSchema, instanceIdSchema, peerIdSchema, requestAuthSchema } from '../core/index.ts'
import type { ApiHost } from './api-host.ts'
import type { Api } from './app.ts'
import { authOf, signedBy, signedInBody } from './auth.ts'
import { errorResponses as errors } from './schemas.ts'

const budgetParams = z.strictObject({ id: z.string().regex(/^[0-9a-f]{64}$/, 'a budget id is its allowance\'s hash: 64 hex digits') })

const handedBidSchema = z.strictObject({ instance: instanceIdSchema, host: peerIdSchema, params: bidParamsSchema, auth: requestAuthSchema, allowance: allowanceSchema })

/** Budgets this host's bidder spends for owners, by the best response, under the allowances they sign it. */
export function registerBudgetRoutes (api: Api, host: ApiHost): void {
  api.post('/v1/budgets', {
    schema: {
      operationId: 'giveBudget',
      ...signedInBody('owner', 'the allowance in the body, signed by its owner for this host\'s agent key'),
      summary: 'Give this host\'s bidder a budget: an allowance the owner signed for its agent key (see /v1/host), naming the instances it bids for and the escrows of their hosts, and the host of each instance. It pays the first round at once and answers each instance\'s bid, for the deploy that makes it; then it bids again round after round until the allowance ends. Asked again, it pays nothing more',
      body: z.strictObject({ allowance: allowanceSchema, hosts: z.record(instanceIdSchema, peerIdSchema) }),
      response: { 200: z.strictObject({ budget: budgetViewSchema, bids: z.array(handedBidSchema) }), ...errors },
    },
  }, async req => {
    const bids = await host.bidder.open(req.body.allowance, req.body.hosts)
    return { budget: await host.bidder.view(allowanceId(req.body.allowance), req.body.allowance.owner), bids }
  })

  api.get('/v1/budgets/:id', {
    schema: { operationId: 'getBudget', summary: 'A budget: what it paid of its maximum, until when, and each instance\'s bid as its host last said', ...signedBy('owner', 'get on the budget id'), params: budgetParams, response: { 200: budgetViewSchema, ...errors } },
  }, async req => await host.bidder.view(req.params.id, host.verifier.verify(authOf(req), { action: 'get', target: req.params.id, params: {} })))

  api.delete('/v1/budgets/:id', {
    schema: { operationId: 'stopBudget', summary: 'Stop spending a budget: its bids run out at the end of the time they paid for, and pay back what they did not spend', ...signedBy('owner', 'stop on the budget id'), params: budgetParams, response: { 200: budgetViewSchema, ...errors } },
  }, async req => await host.bidder.stopBudget(req.params.id, host.verifier.verify(authOf(req), { action: 'stop', target: req.params.id, params: {} })))
}
