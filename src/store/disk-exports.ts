import type { Database } from './database.ts'
import { Rows } from './rows.ts'

/**
 * A disk this host keeps serving to another host after the instance migrated there: the
 * instance's overlay stays here, owned by its disk server, until the host it runs on releases it.
 * While the instance moves on from one host to the next, the disk is served to both (a record
 * each); the newest is the host it runs on, or is arriving at.
 */
export interface DiskExportRecord {
  instanceId: string
  owner: string
  /** The only host the export's ticket admits. */
  peer: string
  token: string
  /** The disk server's state (opaque to the store). */
  server: Record<string, unknown>
  createdAt: number
}

const rows = new Rows<DiskExportRecord>('disk_exports', { instanceId: 'plain', owner: 'plain', peer: 'plain', token: 'plain', server: 'json', createdAt: 'plain' })

export class DiskExportTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /** Adds or replaces the export of an instance's disk to one host. */
  put (e: DiskExportRecord): void {
    this.#db.prepare(rows.insert('INSERT OR REPLACE')).run(...rows.values(e))
  }

  /** The hosts an instance's disk is served to, oldest first. */
  forInstance (instanceId: string): DiskExportRecord[] {
    return rows.all(this.#db.prepare('SELECT * FROM disk_exports WHERE instance_id = ? ORDER BY created_at, rowid').all(instanceId))
  }

  list (): DiskExportRecord[] {
    return rows.all(this.#db.prepare('SELECT * FROM disk_exports ORDER BY created_at').all())
  }

  /** Ends the export to `peer`, or (without it) to every host. */
  remove (instanceId: string, peer?: string): void {
    if (peer === undefined) this.#db.prepare('DELETE FROM disk_exports WHERE instance_id = ?').run(instanceId)
    else this.#db.prepare('DELETE FROM disk_exports WHERE instance_id = ? AND peer = ?').run(instanceId, peer)
  }
}
