import { entryHash, GENESIS_HASH, ISSUED_ACCOUNT, XenosError, type LedgerEntry } from '../core/index.ts'
import { transaction, type Database } from './database.ts'

interface EntryRow {
  seq: number
  kind: LedgerEntry['kind']
  from_account: string
  to_account: string
  amount: number
  nonce: string
  order_json: string | null
  at: number
  prev: string
  hash: string
}

function entryOf (r: EntryRow): LedgerEntry {
  return { seq: r.seq, kind: r.kind, from: r.from_account, to: r.to_account, amount: r.amount, nonce: r.nonce, order: r.order_json, at: r.at, prev: r.prev, hash: r.hash }
}

/**
 * A bank's ledger: append-only, each entry chained to the one before by its hash, and the
 * balance of every account it moves credits between, written in the same transaction as the
 * entry. A crash leaves both before the entry or both after it; a balance below zero (but the
 * issuing account's) is refused in that transaction, and so is an account's nonce used twice.
 */
export class LedgerTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /**
   * Appends the move of `amount` from `from` to `to`, chained to the last entry; throws
   * INSUFFICIENT_FUNDS when `from` holds less, or ALLOWANCE_EXCEEDED when it is paid under
   * `allowance` and would take it past its maximum.
   */
  append (e: Pick<LedgerEntry, 'kind' | 'from' | 'to' | 'amount' | 'nonce' | 'order' | 'at'>, allowance?: { id: string, max: number }): LedgerEntry {
    return transaction(this.#db, () => {
      const held = this.balance(e.from)
      if (e.from !== ISSUED_ACCOUNT && held < e.amount) throw new XenosError('INSUFFICIENT_FUNDS', `account ${e.from} holds ${held}, less than the ${e.amount} asked for`)
      if (allowance !== undefined) {
        const paid = this.paidUnder(allowance.id)
        if (paid + e.amount > allowance.max) throw new XenosError('ALLOWANCE_EXCEEDED', `allowance ${allowance.id.slice(0, 12)} paid ${paid} of its ${allowance.max} credits: ${e.amount} more is beyond it`)
      }
      const head = this.head()
      const unhashed = { ...e, seq: head.seq + 1, prev: head.hash }
      const entry: LedgerEntry = { ...unhashed, hash: entryHash(unhashed) }
      this.#db.prepare('INSERT INTO ledger (seq, kind, from_account, to_account, amount, nonce, order_json, at, prev, hash, allowance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(entry.seq, entry.kind, entry.from, entry.to, entry.amount, entry.nonce, entry.order, entry.at, entry.prev, entry.hash, allowance?.id ?? null)
      const move = this.#db.prepare('INSERT INTO balances (account, balance) VALUES (?, ?) ON CONFLICT(account) DO UPDATE SET balance = balance + excluded.balance')
      move.run(e.from, -e.amount)
      move.run(e.to, e.amount)
      return entry
    })
  }

  /** What was paid under allowance `id` so far. */
  paidUnder (id: string): number {
    const r = this.#db.prepare('SELECT COALESCE(SUM(amount), 0) AS paid FROM ledger WHERE allowance = ?').get(id) as { paid: number }
    return r.paid
  }

  /** The entry account `from` made with `nonce`, if any. */
  byNonce (from: string, nonce: string): LedgerEntry | undefined {
    const r = this.#db.prepare('SELECT * FROM ledger WHERE from_account = ? AND nonce = ?').get(from, nonce) as EntryRow | undefined
    return r === undefined ? undefined : entryOf(r)
  }

  /** The last entry's number and hash (the genesis hash before the first). */
  head (): { seq: number, hash: string } {
    const r = this.#db.prepare('SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1').get() as { seq: number, hash: string } | undefined
    return r ?? { seq: 0, hash: GENESIS_HASH }
  }

  /** Up to `limit` entries from number `from` on, in order. */
  entries (from: number, limit: number): LedgerEntry[] {
    return (this.#db.prepare('SELECT * FROM ledger WHERE seq >= ? ORDER BY seq LIMIT ?').all(from, limit) as unknown as EntryRow[]).map(entryOf)
  }

  /** The latest `limit` entries that move credits from or to `account`, newest first. */
  entriesOf (account: string, limit: number): LedgerEntry[] {
    return (this.#db.prepare('SELECT * FROM ledger WHERE from_account = ? OR to_account = ? ORDER BY seq DESC LIMIT ?').all(account, account, limit) as unknown as EntryRow[]).map(entryOf)
  }

  balance (account: string): number {
    const r = this.#db.prepare('SELECT balance FROM balances WHERE account = ?').get(account) as { balance: number } | undefined
    return r?.balance ?? 0
  }

  /** The sum of every balance: zero, since each entry takes from one account what it gives another. */
  total (): number {
    const r = this.#db.prepare('SELECT COALESCE(SUM(balance), 0) AS total FROM balances').get() as { total: number }
    return r.total
  }
}
