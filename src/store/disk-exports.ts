import type { Database } from './database.ts'

/**
 * A disk this host keeps serving to another host after the instance migrated there: the
 * instance's overlay stays here, owned by its disk server, until the new host releases it.
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

interface DiskExportRow {
  instance_id: string
  owner: string
  peer: string
  token: string
  server: string
  created_at: number
}

function fromRow (r: DiskExportRow): DiskExportRecord {
  return { instanceId: r.instance_id, owner: r.owner, peer: r.peer, token: r.token, server: JSON.parse(r.server) as Record<string, unknown>, createdAt: r.created_at }
}

export class DiskExportTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /** Adds or replaces the export of an instance's disk. */
  put (e: DiskExportRecord): void {
    this.#db.prepare('INSERT OR REPLACE INTO disk_exports (instance_id, owner, peer, token, server, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(e.instanceId, e.owner, e.peer, e.token, JSON.stringify(e.server), e.createdAt)
  }

  get (instanceId: string): DiskExportRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM disk_exports WHERE instance_id = ?').get(instanceId) as DiskExportRow | undefined
    return row === undefined ? undefined : fromRow(row)
  }

  list (): DiskExportRecord[] {
    return (this.#db.prepare('SELECT * FROM disk_exports ORDER BY created_at').all() as unknown as DiskExportRow[]).map(fromRow)
  }

  remove (instanceId: string): void {
    this.#db.prepare('DELETE FROM disk_exports WHERE instance_id = ?').run(instanceId)
  }
}
