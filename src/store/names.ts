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
    return this.#db.prepare('SELECT owner, name, tag, kind, template, seq, record FROM names WHERE owner = ? AND name = ? AND tag = ?').get(owner, name, tag) as NameRow | undefined
  }

  /** Keeps `r`, its template seen at `seenAt`. */
  put (r: NameRow, seenAt: number): void {
    this.#db.prepare(`INSERT INTO names (owner, name, tag, kind, template, seq, record, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (owner, name, tag) DO UPDATE SET kind = excluded.kind, template = excluded.template, seq = excluded.seq, record = excluded.record, seen_at = excluded.seen_at`)
      .run(r.owner, r.name, r.tag, r.kind, r.template, r.seq, r.record, seenAt)
  }

  /** Every name, or one owner's, ordered for display. */
  list (owner?: string): NameRow[] {
    const rows = owner === undefined
      ? this.#db.prepare('SELECT owner, name, tag, kind, template, seq, record FROM names ORDER BY owner, name, tag').all()
      : this.#db.prepare('SELECT owner, name, tag, kind, template, seq, record FROM names WHERE owner = ? ORDER BY name, tag').all(owner)
    return rows as unknown as NameRow[]
  }

  /** Names from after `after` (an `owner/name/tag` key) in key order, at most `limit`. */
  page (after: string | null, limit: number): NameRow[] {
    return this.#db.prepare("SELECT owner, name, tag, kind, template, seq, record FROM names WHERE owner || '/' || name || '/' || tag > ? ORDER BY owner || '/' || name || '/' || tag LIMIT ?")
      .all(after ?? '', limit) as unknown as NameRow[]
  }

  count (owner?: string): number {
    const row = owner === undefined
      ? this.#db.prepare('SELECT count(*) AS n FROM names').get()
      : this.#db.prepare('SELECT count(*) AS n FROM names WHERE owner = ?').get(owner)
    return (row as { n: number }).n
  }

  /** Every template some name points at. */
  templates (): string[] {
    return (this.#db.prepare('SELECT DISTINCT template FROM names').all() as Array<{ template: string }>).map(r => r.template)
  }

  /** The names pointing at `template` were seen with it at `at`. */
  seen (template: string, at: number): void {
    this.#db.prepare('UPDATE names SET seen_at = ? WHERE template = ?').run(at, template)
  }

  /** Drops the names whose template was last seen before `before`; returns how many. */
  dropUnseenSince (before: number): number {
    return Number(this.#db.prepare('DELETE FROM names WHERE seen_at < ?').run(before).changes)
  }
}
