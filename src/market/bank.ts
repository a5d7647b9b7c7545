import type { Logger } from 'pino'
import {
  allowanceId, ISSUED_ACCOUNT, mintSigned, sha256Hex, signReceipt, spendingByInstance, spendProblem, transferSigned, XenosError,
  type AccountView, type LedgerEntry, type MintOrder, type OwnerKey, type Receipt, type SpendOrder, type TransferOrder,
} from '../core/index.ts'
import type { LedgerTable } from '../store/index.ts'

export interface BankInit {
  ledger: LedgerTable
  /** The bank's own key: it signs every receipt, and orders name it. */
  key: OwnerKey
  /** The keys that may mint credits. */
  operators: readonly string[]
  /** What a new account is given when it is first opened (0: nothing). */
  startingGrant: number
  log: Logger
}

/** How long an order may wait before its bank carries it out: a payer retrying after an outage within it gets its receipt, once. */
export const ORDER_VALID_MS = 10 * 60_000

/**
 * A bank (Tycoon's): accounts by owner key, a double-entry, append-only ledger, every transfer
 * signed by its payer and carried out once (its nonce), never beyond the payer's balance, and
 * answered with a receipt signed by the bank, which anyone can check offline. The same payment
 * again under its nonce (a payer retrying after a lost answer, or signing it again once it grew
 * old) gets the same receipt; another order under a used nonce is refused. Its operators mint credits; a new account may get a starting grant.
 */
export class Bank {
  readonly #init: BankInit

  constructor (init: BankInit) {
    this.#init = init
  }

  get id (): string {
    return this.#init.key.id
  }

  /** Carries out transfer `order` (once), and answers its receipt. */
  transfer (order: TransferOrder, now = Date.now()): Receipt {
    this.#checkFor(order)
    if (!transferSigned(order)) throw new XenosError('UNAUTHENTICATED', `this transfer is not signed by the account it takes from (${order.from})`)
    if (order.from === order.to) throw new XenosError('INVALID_ARGUMENT', 'a transfer goes to another account than the one it comes from')
    return this.#once(order.from, order.nonce, order, now, () => this.#init.ledger.append({ kind: 'transfer', from: order.from, to: order.to, amount: order.amount, nonce: order.nonce, order: JSON.stringify(order), at: now }))
  }

  /**
   * Carries out payment `order` of an agent's under an owner's allowance (once), and answers its
   * receipt: only to the allowance's payees, in its time, and never past its maximum (what it
   * paid before is counted in the same transaction as this payment).
   */
  spend (order: SpendOrder, now = Date.now()): Receipt {
    this.#checkFor(order)
    const a = order.allowance
    // A payment carried out before is judged as of then: asked again after its allowance ended, it answers its receipt.
    const problem = spendProblem(this.id, order, this.#init.ledger.byNonce(a.owner, order.nonce)?.at ?? now)
    if (problem !== null) throw new XenosError(problem.code, problem.message)
    if (a.owner === order.to) throw new XenosError('INVALID_ARGUMENT', 'a payment goes to another account than the one it comes from')
    const allowance = { id: allowanceId(a), max: a.max }
    return this.#once(a.owner, order.nonce, order, now, () => this.#init.ledger.append({ kind: 'spend', from: a.owner, to: order.to, amount: order.amount, nonce: order.nonce, order: JSON.stringify(order), at: now }, allowance))
  }

  /** Mints new credits into an account, at an operator's signed word (once), and answers the receipt. */
  mint (order: MintOrder, now = Date.now()): Receipt {
    this.#checkFor(order)
    if (!this.#init.operators.includes(order.by)) throw new XenosError('FORBIDDEN', `${order.by} is no operator of bank ${this.id}: only its operators mint credits`)
    if (!mintSigned(order)) throw new XenosError('UNAUTHENTICATED', `this mint is not signed by the operator it names (${order.by})`)
    return this.#once(ISSUED_ACCOUNT, order.nonce, order, now, () => this.#init.ledger.append({ kind: 'mint', from: ISSUED_ACCOUNT, to: order.to, amount: order.amount, nonce: order.nonce, order: JSON.stringify(order), at: now }))
  }

  /** Account `owner` (opened now, with the starting grant, when it is new), with what it spent on each instance. */
  account (owner: string, limit = 50, now = Date.now()): AccountView {
    const grant = this.#init.startingGrant
    // The grant's nonce is the account's own: it is given once, whoever asks first.
    const nonce = sha256Hex(`xenos-grant\n${owner}`).slice(0, 32)
    if (grant > 0 && this.#init.ledger.byNonce(ISSUED_ACCOUNT, nonce) === undefined) {
      this.#init.ledger.append({ kind: 'grant', from: ISSUED_ACCOUNT, to: owner, amount: grant, nonce, order: null, at: now })
    }
    const { ledger } = this.#init
    // All of the account's entries, newest first: the spending needs every one, the view the latest.
    const entries = ledger.entriesOf(owner, Number.MAX_SAFE_INTEGER)
    return { owner, bank: this.id, balance: ledger.balance(owner), instances: spendingByInstance(owner, entries), entries: entries.slice(0, limit) }
  }

  /** The receipt of entry `seq`. */
  receipt (seq: number): Receipt {
    const [e] = this.#init.ledger.entries(seq, 1)
    if (e?.seq !== seq) throw new XenosError('DATA_NOT_FOUND', `bank ${this.id} has no entry ${seq}`)
    return signReceipt(this.#init.key, e)
  }

  head (): { bank: string, seq: number, hash: string } {
    return { bank: this.id, ...this.#init.ledger.head() }
  }

  entries (from: number, limit: number): LedgerEntry[] {
    return this.#init.ledger.entries(from, limit)
  }

  #checkFor (order: { bank: string, issuedAt: number }): void {
    if (order.bank !== this.id) throw new XenosError('UNKNOWN_BANK', `this order is for bank ${order.bank}, not for bank ${this.id}`)
  }

  /**
   * Carries out the order `account` numbered `nonce` once: the same order again answers the
   * receipt of what was done; another order under that nonce, or one too old to carry out now,
   * is refused.
   */
  #once (account: string, nonce: string, order: { issuedAt: number, amount: number, to: string }, now: number, append: () => LedgerEntry): Receipt {
    const done = this.#init.ledger.byNonce(account, nonce)
    if (done !== undefined) return this.#again(done, order)
    if (Math.abs(now - order.issuedAt) > ORDER_VALID_MS) throw new XenosError('UNAUTHENTICATED', `this order was signed ${Math.round((now - order.issuedAt) / 60_000)} min from this bank's clock, beyond the ${ORDER_VALID_MS / 60_000} min it waits: sign it again`)
    // The look-up above and the append run without a pause between them (the ledger is written synchronously): no other order comes between.
    const entry = append()
    this.#init.log.info({ seq: entry.seq, kind: entry.kind, from: entry.from, to: entry.to, amount: entry.amount }, 'ledger entry')
    return signReceipt(this.#init.key, entry)
  }

  /**
   * The order `done` carried out, asked again: the same payment (however often signed again, as
   * a payer whose orders grew old while the bank was down does) answers the same receipt.
   */
  #again (done: LedgerEntry, order: { amount: number, to: string }): Receipt {
    if (done.amount !== order.amount || done.to !== order.to) throw new XenosError('UNAUTHENTICATED', `nonce ${done.nonce} of ${done.from} was used already, by another order: sign a new one`)
    return signReceipt(this.#init.key, done)
  }
}
