import type { Database } from './database.ts'

/** What a host was told to be (a drain, say) and must still be after a restart, by name. */
export class SettingsTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  get (key: string): string | undefined {
    return (this.#db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as { value: string } | undefined)?.value
  }

  set (key: string, value: string): void {
    this.#db.prepare('INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)').run(key, value)
  }
}
