import { XenosError, type Receipt } from '../core/index.ts'
import { transaction, type Database } from './database.ts'
import { Rows } from './rows.ts'

/** The bid on an instance, as its host keeps it (see market/bids.ts for what the numbers mean). */
export interface BidRecord {
  instanceId: string
  owner: string
  /** The bank whose receipts paid for it, and to which its refund and earnings go. */
  bank: string
  paid: number
  charged: number
  chargedTo: number
  until: number
  openedAt: number
}

/** A transfer out of the host's escrow the bank has yet to carry out (then `receipt` is its receipt). */
export interface PayoutRecord {
  /** Fixed when the payout is written: however often it is signed again, the bank carries it out once. */
  nonce: string
  bank: string
  toAccount: string
  amount: number
  memo: string
  createdAt: number
  receipt: Receipt | null
}

const bidRows = new Rows<BidRecord>('bids', { instanceId: 'plain', owner: 'plain', bank: 'plain', paid: 'plain', charged: 'plain', chargedTo: 'plain', until: 'plain', openedAt: 'plain' })
const payoutRows = new Rows<PayoutRecord>('payouts', { nonce: 'plain', bank: 'plain', toAccount: 'plain', amount: 'plain', memo: 'plain', createdAt: 'plain', receipt: 'json' })

/**
 * A host's bids, the receipts that paid for them and the payouts they lead to. A receipt is
 * written with the bid it pays for in one transaction, and is refused if it was written before:
 * each is spent once. A bid is closed with its payouts in one transaction: a crash leaves the
 * bid open or its refund and earnings owed, never both, never neither.
 */
export class BidTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  get (instanceId: string): BidRecord | undefined {
    return bidRows.maybe(this.#db.prepare('SELECT * FROM bids WHERE instance_id = ?').get(instanceId))
  }

  list (): BidRecord[] {
    return bidRows.all(this.#db.prepare('SELECT * FROM bids ORDER BY opened_at').all())
  }

  /** Writes bid `b`, paid for (further) by `receipt` when there is one; throws RECEIPT_SPENT if that receipt was spent before. */
  put (b: BidRecord, receipt: Receipt | undefined): void {
    transaction(this.#db, () => {
      if (receipt !== undefined) this.#spend(receipt, b.instanceId)
      this.#db.prepare(bidRows.insert('INSERT OR REPLACE')).run(...bidRows.values(b))
    })
  }

  /** Throws RECEIPT_SPENT if `receipt` was spent: on a bid, or paid back. */
  unspent (receipt: Receipt): void {
    const spent = this.#db.prepare('SELECT instance_id FROM bid_receipts WHERE bank = ? AND seq = ?').get(receipt.bank, receipt.seq) as { instance_id: string } | undefined
    if (spent !== undefined) throw new XenosError('RECEIPT_SPENT', `receipt ${receipt.seq} of bank ${receipt.bank} was spent already (${spent.instance_id === '' ? 'paid back' : `on a bid on instance ${spent.instance_id}`}): pay again for a new bid`)
  }

  /** Spends `receipt` on paying it back, as `payout` (in one transaction); throws RECEIPT_SPENT if it was spent before. */
  refund (receipt: Receipt, payout: PayoutRecord): void {
    transaction(this.#db, () => {
      this.#spend(receipt, '')
      this.#db.prepare(payoutRows.insert()).run(...payoutRows.values(payout))
    })
  }

  /** Marks `receipt` spent on instance `on` ('' for paid back). */
  #spend (receipt: Receipt, on: string): void {
    this.unspent(receipt)
    this.#db.prepare('INSERT INTO bid_receipts (bank, seq, instance_id, amount, at) VALUES (?, ?, ?, ?, ?)').run(receipt.bank, receipt.seq, on, receipt.amount, receipt.at)
  }

  /** Ends the bid on `instanceId`, writing what its escrow owes in the same transaction. */
  close (instanceId: string, payouts: PayoutRecord[]): void {
    transaction(this.#db, () => {
      this.#db.prepare('DELETE FROM bids WHERE instance_id = ?').run(instanceId)
      for (const p of payouts) this.#db.prepare(payoutRows.insert()).run(...payoutRows.values(p))
    })
  }

  /** Payouts the bank has not answered yet, oldest first. */
  owed (): PayoutRecord[] {
    return payoutRows.all(this.#db.prepare('SELECT * FROM payouts WHERE receipt IS NULL ORDER BY created_at').all())
  }

  /** Every payout, newest first. */
  payouts (limit = 100): PayoutRecord[] {
    return payoutRows.all(this.#db.prepare('SELECT * FROM payouts ORDER BY created_at DESC LIMIT ?').all(limit))
  }

  paidOut (nonce: string, receipt: Receipt): void {
    this.#db.prepare('UPDATE payouts SET receipt = ? WHERE nonce = ?').run(JSON.stringify(receipt), nonce)
  }
}
