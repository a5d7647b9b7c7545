import type { Allowance, Receipt, SpendOrder } from '../core/index.ts'
import { transaction, type Database } from './database.ts'
import { Rows } from './rows.ts'

/** A budget a host's bidder spends under an owner's allowance: on which host each of its instances runs, and whether it still bids. */
export interface BudgetRecord {
  /** The allowance's id. */
  id: string
  owner: string
  allowance: Allowance
  /** Instance id → the host that runs it. */
  hosts: Record<string, string>
  state: 'active' | 'stopped' | 'ended'
  createdAt: number
  updatedAt: number
}

/**
 * A payment the bidder signed under a budget's allowance, from the moment it is signed until its
 * bid took it: `pending` until the bank answers (then `paid`, with the receipt), `bid` once the
 * instance's host took it, `stranded` when the host would not (its receipt is the owner's to ask
 * back), `handed` when it went to a deploy, whose host opens the bid with it.
 */
export interface BudgetPaymentRecord {
  /** The spend order's nonce: however often it is sent, the bank carries it out once. */
  nonce: string
  budget: string
  instanceId: string
  amount: number
  /** How long the bid it pays for lasts from when it is made. */
  seconds: number
  spend: SpendOrder
  receipt: Receipt | null
  state: 'pending' | 'paid' | 'bid' | 'stranded' | 'handed'
  createdAt: number
}

const budgetRows = new Rows<BudgetRecord>('budgets', { id: 'plain', owner: 'plain', allowance: 'json', hosts: 'json', state: 'plain', createdAt: 'plain', updatedAt: 'plain' })
const paymentRows = new Rows<BudgetPaymentRecord>('budget_payments', { nonce: 'plain', budget: 'plain', instanceId: 'plain', amount: 'plain', seconds: 'plain', spend: 'json', receipt: 'json', state: 'plain', createdAt: 'plain' })

/**
 * The budgets this host bids for, and every payment it signed under them, written before it is
 * sent: after a crash the same orders go again (the bank answers the same receipt), so nothing is
 * paid twice and nothing the allowance paid is forgotten.
 */
export class BudgetTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /** Writes budget `b` with its first payments, unless it is here already; whether it was new. */
  open (b: BudgetRecord, payments: readonly BudgetPaymentRecord[]): boolean {
    return transaction(this.#db, () => {
      const added = this.#db.prepare(budgetRows.insert('INSERT OR IGNORE')).run(...budgetRows.values(b)).changes > 0
      if (added) for (const p of payments) this.#db.prepare(paymentRows.insert()).run(...paymentRows.values(p))
      return added
    })
  }

  get (id: string): BudgetRecord | undefined {
    return budgetRows.maybe(this.#db.prepare('SELECT * FROM budgets WHERE id = ?').get(id))
  }

  active (): BudgetRecord[] {
    return budgetRows.all(this.#db.prepare("SELECT * FROM budgets WHERE state = 'active' ORDER BY created_at").all())
  }

  setState (id: string, state: BudgetRecord['state'], now = Date.now()): void {
    this.#db.prepare('UPDATE budgets SET state = ?, updated_at = ? WHERE id = ?').run(state, now, id)
  }

  addPayment (p: BudgetPaymentRecord): void {
    this.#db.prepare(paymentRows.insert()).run(...paymentRows.values(p))
  }

  payments (budget: string): BudgetPaymentRecord[] {
    return paymentRows.all(this.#db.prepare('SELECT * FROM budget_payments WHERE budget = ? ORDER BY created_at').all(budget))
  }

  /** Payments not yet taken by a bid (nor given up): the bank's answer or the host's is still to come. */
  unsettled (budget: string): BudgetPaymentRecord[] {
    return paymentRows.all(this.#db.prepare("SELECT * FROM budget_payments WHERE budget = ? AND state IN ('pending', 'paid') ORDER BY created_at").all(budget))
  }

  /** What the budget's payments add up to (those the bank may yet carry out included). */
  paid (budget: string): number {
    const r = this.#db.prepare('SELECT COALESCE(SUM(amount), 0) AS paid FROM budget_payments WHERE budget = ?').get(budget) as { paid: number }
    return r.paid
  }

  /** Payment `nonce` moved on: the bank's receipt came, or its bid took it, or nothing will. */
  settle (nonce: string, state: BudgetPaymentRecord['state'], receipt?: Receipt): void {
    if (receipt === undefined) this.#db.prepare('UPDATE budget_payments SET state = ? WHERE nonce = ?').run(state, nonce)
    else this.#db.prepare('UPDATE budget_payments SET state = ?, receipt = ? WHERE nonce = ?').run(state, JSON.stringify(receipt), nonce)
  }

  /** Payment `nonce` was refused by the bank: it never happened. */
  drop (nonce: string): void {
    this.#db.prepare('DELETE FROM budget_payments WHERE nonce = ?').run(nonce)
  }
}
