import { newNonce, receiptSigned, XenosError, type BidParams, type MarketView, type Receipt } from '../core/index.ts'
import type { BidRecord, BidTable, PayoutRecord } from '../store/index.ts'
import { changed, chargedAt, opened, rateAt, sharesOf, type BidState } from './bids.ts'



export interface AuctioneerInit {
  bids: BidTable
  /** The host's escrow account: bids are paid into it, refunds and earnings paid out of it. */
  escrow: string
  /** Where what was spent on this host goes: its operator's account. */
  earnings: string
  /** The banks whose receipts this host takes. */
  banks: readonly string[]
  /** The share each instance without a bid gets (the operator's floor), while others bid. */
  floor: number
  /** CPUs the host offers: the price is the sum of bid rates over it. */
  cpu: number
}

/**
 * A host's auctioneer (Tycoon's): sells shares of the CPU it offers. A bid is paid by a bank's
 * receipt of a transfer into the host's escrow, checked here offline (the bank's signature, the
 * payee, the payer, and that no bid spent it before). Each instance's share is its rate over the
 * sum of rates; a bid is charged second by second, and when it ends (its time runs out, or its
 * instance stops) what it spent goes to the operator and what it did not back to its owner.
 */
export class Auctioneer {
  readonly #init: AuctioneerInit

  constructor (init: AuctioneerInit) {
    this.#init = init
  }

  get escrow (): string {
    return this.#init.escrow
  }

  /** The CPUs this host offers. */
  get cpu (): number {
    return this.#init.cpu
  }

  /**
   * Throws unless `receipt` pays `owner`'s bid here: signed by a bank this host takes, a transfer
   * from `owner` into this host's escrow. Whether it was spent before is the bid table's to say.
   */
  checkReceipt (owner: string, receipt: Receipt): void {
    if (!this.#init.banks.includes(receipt.bank)) throw new XenosError('BAD_RECEIPT', `this receipt is from bank ${receipt.bank}, which this host does not take; it takes ${this.#init.banks.join(', ') || 'none'}`)
    if (!receiptSigned(receipt)) throw new XenosError('BAD_RECEIPT', `this receipt is not signed by bank ${receipt.bank}`)
    if ((receipt.kind !== 'transfer' && receipt.kind !== 'spend') || receipt.to !== this.#init.escrow) throw new XenosError('BAD_RECEIPT', `this receipt pays ${receipt.to}, not this host's escrow ${this.#init.escrow}: pay the host the bid is for`)
    if (receipt.from !== owner) throw new XenosError('BAD_RECEIPT', `this receipt is a payment of ${receipt.from}'s, not of the bidder's (${owner})`)
  }

  /** Opens or changes the bid on instance `instanceId` of `owner`'s, as `params` say. */
  bid (instanceId: string, owner: string, params: BidParams, now = Date.now()): BidRecord {
    const { receipt, seconds } = params
    if (receipt !== undefined) this.checkReceipt(owner, receipt)
    const held = this.#init.bids.get(instanceId)
    const live = held !== undefined && held.until > now ? held : undefined
    if (held !== undefined && live === undefined) throw new XenosError('INVALID_STATE', `the bid on instance ${instanceId} ran out; its host is closing it: bid again in a moment`)
    let state: BidState
    if (live === undefined) {
      if (receipt === undefined || seconds === undefined) throw new XenosError('INVALID_STATE', `instance ${instanceId} has no bid to change: a new bid pays (a receipt) for a time (seconds)`)
      state = opened(receipt.amount, seconds, now)
    } else {
      if (live.bank !== (receipt?.bank ?? live.bank)) throw new XenosError('BAD_RECEIPT', `the bid on instance ${instanceId} is paid through bank ${live.bank}: pay more through it`)
      state = changed(live, now, receipt?.amount ?? 0, seconds)
    }
    const record: BidRecord = { instanceId, owner, bank: receipt?.bank ?? live?.bank ?? '', openedAt: live?.openedAt ?? now, ...state }
    this.#init.bids.put(record, receipt)
    return record
  }

  /**
   * Ends the bid on `instanceId`, if it has one: what it spent is owed to the operator, the rest
   * to its owner, written with its end in one transaction. Returns what is owed.
   */
  close (instanceId: string, now = Date.now()): PayoutRecord[] {
    const b = this.#init.bids.get(instanceId)
    if (b === undefined) return []
    const spent = chargedAt(b, now)
    const owed = [
      { to: this.#init.earnings, amount: spent, memo: `earned by instance ${instanceId}` },
      { to: b.owner, amount: b.paid - spent, memo: `unspent bid on instance ${instanceId}` },
    ].filter(p => p.amount > 0).map(p => ({ nonce: newNonce(), bank: b.bank, toAccount: p.to, amount: p.amount, memo: p.memo, createdAt: now, receipt: null }))
    this.#init.bids.close(instanceId, owed)
    return owed
  }

  /** Owes `owner` back payment `receipt` into the escrow that no bid took; the receipt is then spent. */
  refund (owner: string, receipt: Receipt, now = Date.now()): PayoutRecord {
    this.checkReceipt(owner, receipt)
    const payout = { nonce: newNonce(), bank: receipt.bank, toAccount: owner, amount: receipt.amount, memo: `payment ${receipt.seq} no bid took`, createdAt: now, receipt: null }
    this.#init.bids.refund(receipt, payout)
    return payout
  }

  /** Ends every bid whose time ran out; returns the instances whose bids ended. */
  expire (now = Date.now()): string[] {
    const ended = this.#init.bids.list().filter(b => b.until <= now).map(b => b.instanceId)
    for (const id of ended) this.close(id, now)
    return ended
  }

  /** The share of each of `running` (instance ids): by their bids' rates, the floor for those without one. */
  shares (running: readonly string[], now = Date.now()): Map<string, number> {
    const bids = new Map(this.#init.bids.list().map(b => [b.instanceId, b]))
    const rates = new Map<string, number>()
    const unbid: string[] = []
    for (const id of running) {
      const b = bids.get(id)
      const rate = b === undefined ? 0 : rateAt(b, now)
      if (rate > 0) rates.set(id, rate)
      else unbid.push(id)
    }
    return sharesOf(rates, unbid, this.#init.floor)
  }

  /** Whether instance `id` has a bid that runs now. */
  bidding (id: string, now = Date.now()): boolean {
    const b = this.#init.bids.get(id)
    return b !== undefined && b.until > now
  }

  /** The host's price now: credits per second of all bids, per CPU it offers. */
  price (now = Date.now()): number {
    return this.#init.bids.list().reduce((n, b) => n + rateAt(b, now), 0) / this.#init.cpu
  }

  /** What the views of instance `id` show of its bid. */
  view (id: string, now = Date.now()): MarketView {
    const b = this.#init.bids.get(id)
    if (b === undefined) return {}
    return { bid: b.paid, spent: chargedAt(b, now), rate: rateAt(b, now), bidUntil: b.until }
  }
}
