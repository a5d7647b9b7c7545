import type { Database } from './database.ts'

/** A VM's saved memory and disk, from which new instances can start (XenoServer's fast deploy). */
export interface SnapshotRecord {
  id: string
  instanceId: string
  templateId: string
  owner: string
  createdAt: number
}

interface SnapshotRow {
  id: string
  instance_id: string
  template_id: string
  owner: string
  created_at: number
}

function fromRow (r: SnapshotRow): SnapshotRecord {
  return { id: r.id, instanceId: r.instance_id, templateId: r.template_id, owner: r.owner, createdAt: r.created_at }
}

export class SnapshotTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (s: SnapshotRecord): void {
    this.#db.prepare('INSERT INTO snapshots (id, instance_id, template_id, owner, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(s.id, s.instanceId, s.templateId, s.owner, s.createdAt)
  }

  get (id: string): SnapshotRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM snapshots WHERE id = ?').get(id) as SnapshotRow | undefined
    return row === undefined ? undefined : fromRow(row)
  }

  list (): SnapshotRecord[] {
    return (this.#db.prepare('SELECT * FROM snapshots ORDER BY created_at').all() as unknown as SnapshotRow[]).map(fromRow)
  }

  remove (id: string): void {
    this.#db.prepare('DELETE FROM snapshots WHERE id = ?').run(id)
  }
}
