/**
 * @packageDocumentation
 * The market (Tycoon's): a bank whose ledger holds every owner's credits, and what hosts do with
 * them. Built on `core` (orders, receipts, the ledger's chain) and `store` (the ledger's table).
 */
export { Bank, ORDER_VALID_MS, type BankInit } from './bank.ts'
export { changed, chargedAt, opened, rateAt, settle, sharesOf, type BidState } from './bids.ts'
export { bestResponse, bestResponseInCredits, totalShare, type Market } from './best-response.ts'
export { Auctioneer, type AuctioneerInit } from './auctioneer.ts'
export { rebid, type BidStep, type BudgetInstance, type HostPrice, type RebidInput } from './rebid.ts'
