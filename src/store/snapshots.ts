import type { Database } from './database.ts'
import { Rows } from './rows.ts'

/** A VM's saved memory and disk, from which new instances can start (XenoServer's fast deploy). */
export interface SnapshotRecord {
  id: string
  instanceId: string
  templateId: string
  owner: string
  createdAt: number
}

const rows = new Rows<SnapshotRecord>('snapshots', { id: 'plain', instanceId: 'plain', templateId: 'plain', owner: 'plain', createdAt: 'plain' })

export class SnapshotTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  insert (s: SnapshotRecord): void {
    this.#db.prepare(rows.insert()).run(...rows.values(s))
  }

  get (id: string): SnapshotRecord | undefined {
    return rows.maybe(this.#db.prepare('SELECT * FROM snapshots WHERE id = ?').get(id))
  }

  list (): SnapshotRecord[] {
    return rows.all(this.#db.prepare('SELECT * FROM snapshots ORDER BY created_at').all())
  }

  remove (id: string): void {
    this.#db.prepare('DELETE FROM snapshots WHERE id = ?').run(id)
  }
}
