import { z } from 'zod'
import { accountViewSchema, ledgerEntrySchema, mintOrderSchema, receiptSchema, transferOrderSchema } from '../core/index.ts'
import { bankWhereSchema, LEDGER_PAGE } from '../node/index.ts'
import type { ApiHost } from './api-host.ts'
import type { Api } from './app.ts'
import { authOf, signedBy, signedInBody } from './auth.ts'
import { errorResponses as errors } from './schemas.ts'

/** The market's bank, through any host: the orders go to the bank this host accepts, which checks each itself; and refunds of payments no bid took. */
export function registerBankRoutes (api: Api, host: ApiHost): void {
  api.get('/v1/bank', {
    schema: { operationId: 'getBank', summary: 'The bank this host deals with: its key, and the host that runs it (sign account requests for that host)', response: { 200: bankWhereSchema, ...errors } },
  }, async () => host.banking.where())

  api.post('/v1/bank/transfers', {
    schema: {
      operationId: 'transferCredits',
      ...signedInBody('owner', 'the transfer order in the body (xenos-transfer-v1), signed by its payer'),
      summary: 'Carry out a transfer its payer signed (xenos-transfer-v1, a fresh nonce): once, never beyond the payer\'s balance; the same order again answers the same receipt. Answers the receipt, signed by the bank',
      body: transferOrderSchema,
      response: { 200: receiptSchema, ...errors },
    },
  }, async req => await host.banking.transfer(req.body))

  api.post('/v1/bank/mints', {
    schema: { operationId: 'mintCredits', ...signedInBody('operator', 'the mint order in the body (xenos-mint-v1), signed by one of the bank\'s operators'), summary: 'Mint new credits into an account, at the signed order of one of the bank\'s operators (xenos-mint-v1); answers the receipt', body: mintOrderSchema, response: { 200: receiptSchema, ...errors } },
  }, async req => await host.banking.mint(req.body))

  api.get('/v1/bank/account', {
    schema: { operationId: 'getAccount', summary: 'The signer\'s account: its balance and latest ledger entries (opened, with the bank\'s starting grant, when new). Signed for the bank\'s host', ...signedBy('owner', 'account on the bank\'s key'), response: { 200: accountViewSchema, ...errors } },
  }, async req => await host.banking.account(authOf(req)))

  api.get('/v1/bank/ledger', {
    schema: {
      operationId: 'getLedger',
      summary: 'Entries of the bank\'s ledger from number `from` on, for anyone to check: each chained to the one before by its hash, each carrying the order it carried out',
      querystring: z.strictObject({ from: z.coerce.number().int().positive().default(1), limit: z.coerce.number().int().min(1).max(LEDGER_PAGE).default(LEDGER_PAGE) }),
      response: { 200: z.object({ entries: z.array(ledgerEntrySchema) }), ...errors },
    },
  }, async req => ({ entries: await host.banking.entries(req.query.from, req.query.limit) }))

  api.post('/v1/market/refunds', {
    schema: {
      operationId: 'refundPayment',
      summary: 'Pay back a payment into this host\'s escrow that no bid took (a deploy whose part failed before its bids were opened): to its payer, who signs for it; the receipt is spent from then on',
      ...signedBy('owner', 'refund on the receipt\'s hash (by its payer), for the host whose escrow it paid'),
      body: z.strictObject({ receipt: receiptSchema }),
      response: { 204: z.null(), ...errors },
    },
  }, async (req, reply) => {
    await host.bidding.refund(req.body.receipt, authOf(req))
    void reply.status(204)
    return null
  })
}
