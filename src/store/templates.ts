import type { Template } from '../core/index.ts'
import type { Database } from './database.ts'
import { Rows } from './rows.ts'

const rows = new Rows<Template>('templates', { id: 'plain', manifest: 'json', importedAt: 'plain', owner: 'plain' })

/** Templates this host holds. Ids are content ids, so putting the same template twice is a no-op. */
export class TemplateTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /** Also keeps the manifest's name and version in columns of their own, which order the list. */
  put (t: Template): void {
    this.#db.prepare('INSERT OR IGNORE INTO templates (id, name, version, manifest, imported_at, owner) VALUES (?, ?, ?, ?, ?, ?)')
      .run(t.id, t.manifest.name, t.manifest.version, JSON.stringify(t.manifest), t.importedAt, t.owner)
  }

  get (id: string): Template | undefined {
    return rows.maybe(this.#db.prepare('SELECT * FROM templates WHERE id = ?').get(id))
  }

  list (): Template[] {
    return rows.all(this.#db.prepare('SELECT * FROM templates ORDER BY name, imported_at').all())
  }

  remove (id: string): boolean {
    return Number(this.#db.prepare('DELETE FROM templates WHERE id = ?').run(id).changes) > 0
  }
}
