import type { Database } from './database.ts'
import { Rows } from './rows.ts'

/**
 * Image files an owner uploaded to this host, counted against the owner's quota while they are
 * here on the owner's account: until a template of the owner's uses them, and as long as one does.
 */
export interface BlobClaimRecord {
  owner: string
  blob: string
  size: number
  createdAt: number
}

const rows = new Rows<BlobClaimRecord>('blob_claims', { owner: 'plain', blob: 'plain', size: 'plain', createdAt: 'plain' })

export class BlobClaimTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  put (c: BlobClaimRecord): void {
    this.#db.prepare(rows.insert('INSERT OR IGNORE')).run(...rows.values(c))
  }

  list (owner?: string): BlobClaimRecord[] {
    return rows.all(owner === undefined
      ? this.#db.prepare('SELECT * FROM blob_claims ORDER BY created_at').all()
      : this.#db.prepare('SELECT * FROM blob_claims WHERE owner = ? ORDER BY created_at').all(owner))
  }

  remove (owner: string, blob: string): void {
    this.#db.prepare('DELETE FROM blob_claims WHERE owner = ? AND blob = ?').run(owner, blob)
  }

  /** Bytes the owner's claims take (each blob once per owner). */
  bytesOf (owner: string): number {
    return (this.#db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM blob_claims WHERE owner = ?').get(owner) as { n: number }).n
  }

  /** Bytes all claims take. */
  totalBytes (): number {
    return (this.#db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM blob_claims').get() as { n: number }).n
  }
}
