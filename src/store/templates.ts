import type { Template, TemplateManifest } from '../core/index.ts'
import type { Database } from './database.ts'

interface TemplateRow {
  id: string
  manifest: string
  imported_at: number
  owner: string | null
}

function fromRow (row: TemplateRow): Template {
  return { id: row.id, manifest: JSON.parse(row.manifest) as TemplateManifest, importedAt: row.imported_at, owner: row.owner }
}

/** Templates this host holds. Ids are content ids, so putting the same template twice is a no-op. */
export class TemplateTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  put (t: Template): void {
    this.#db.prepare('INSERT OR IGNORE INTO templates (id, name, version, manifest, imported_at, owner) VALUES (?, ?, ?, ?, ?, ?)')
      .run(t.id, t.manifest.name, t.manifest.version, JSON.stringify(t.manifest), t.importedAt, t.owner)
  }

  get (id: string): Template | undefined {
    const row = this.#db.prepare('SELECT id, manifest, imported_at, owner FROM templates WHERE id = ?').get(id) as TemplateRow | undefined
    return row === undefined ? undefined : fromRow(row)
  }

  list (): Template[] {
    return (this.#db.prepare('SELECT id, manifest, imported_at, owner FROM templates ORDER BY name, imported_at').all() as unknown as TemplateRow[]).map(fromRow)
  }

  remove (id: string): boolean {
    return Number(this.#db.prepare('DELETE FROM templates WHERE id = ?').run(id).changes) > 0
  }
}
