import type { Database } from './database.ts'

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

interface ClaimRow { owner: string, blob: string, size: number, created_at: number }

const claimOf = (r: ClaimRow): BlobClaimRecord => ({ owner: r.owner, blob: r.blob, size: r.size, createdAt: r.created_at })

export class BlobClaimTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  put (c: BlobClaimRecord): void {
    this.#db.prepare('INSERT OR IGNORE INTO blob_claims (owner, blob, size, created_at) VALUES (?, ?, ?, ?)').run(c.owner, c.blob, c.size, c.createdAt)
  }

  list (owner?: string): BlobClaimRecord[] {
    const rows = owner === undefined
      ? this.#db.prepare('SELECT * FROM blob_claims ORDER BY created_at').all()
      : this.#db.prepare('SELECT * FROM blob_claims WHERE owner = ? ORDER BY created_at').all(owner)
    return (rows as unknown as ClaimRow[]).map(claimOf)
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
