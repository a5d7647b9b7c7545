import type { Database } from './database.ts'

/** The standing record for one `template://owner/name/tag`, as its owner signed it. */
export interface NameRow {
  owner: string
  name: string
  tag: string
  kind: 'version' | 'alias'
  template: string
  seq: number
  /** The signed record itself, to hand on to other hosts. */
  record: string
}

export class NameTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  get (owner: string, name: string, tag: string): NameRow | undefined {
    return this.#db.prepare('SELECT * FROM names WHERE owner = ? AND name = ? AND tag = ?').get(owner, name, tag) as NameRow | undefined
  }

  put (r: NameRow): void {
    this.#db.prepare(`INSERT INTO names (owner, name, tag, kind, template, seq, record) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (owner, name, tag) DO UPDATE SET kind = excluded.kind, template = excluded.template, seq = excluded.seq, record = excluded.record`)
      .run(r.owner, r.name, r.tag, r.kind, r.template, r.seq, r.record)
  }

  /** Every name, or one owner's, ordered for display. */
  list (owner?: string): NameRow[] {
    const rows = owner === undefined
      ? this.#db.prepare('SELECT * FROM names ORDER BY owner, name, tag').all()
      : this.#db.prepare('SELECT * FROM names WHERE owner = ? ORDER BY name, tag').all(owner)
    return rows as unknown as NameRow[]
  }
}
