import type { SQLInputValue } from 'node:sqlite'

/** How a field is kept in its column: as it is, as JSON text, or as 0/1. A null stays NULL. */
export type ColumnKind = 'plain' | 'json' | 'boolean'

/**
 * How the records of one table map to its rows: each field is the column of its snake_case
 * name, kept as its kind says. Naming every field (the type checker asks for all of them) keeps
 * a table's columns, its inserts and its reads in one place.
 */
export class Rows<T extends object> {
  readonly #table: string
  readonly #kinds: Record<keyof T & string, ColumnKind>
  readonly #fields: Array<keyof T & string>

  constructor (table: string, kinds: Record<keyof T & string, ColumnKind>) {
    this.#table = table
    this.#kinds = kinds
    this.#fields = Object.keys(kinds) as Array<keyof T & string>
  }

  /** `INSERT` (or `INSERT OR REPLACE`, `INSERT OR IGNORE`) of every column. */
  insert (verb: 'INSERT' | 'INSERT OR REPLACE' | 'INSERT OR IGNORE' = 'INSERT'): string {
    return `${verb} INTO ${this.#table} (${this.#fields.map(columnOf).join(', ')}) VALUES (${this.#fields.map(() => '?').join(', ')})`
  }

  /** `UPDATE` of `fields` in the row whose `key` column is the last value. */
  update (fields: Array<keyof T & string>, key: keyof T & string): string {
    return `UPDATE ${this.#table} SET ${fields.map(f => `${columnOf(f)} = ?`).join(', ')} WHERE ${columnOf(key)} = ?`
  }

  /** The values of `fields` of `record` (every field, by default), in their columns' form. */
  values (record: T, fields: Array<keyof T & string> = this.#fields): SQLInputValue[] {
    return fields.map(f => {
      const value = record[f] as unknown
      if (value === null || value === undefined) return null
      const kind = this.#kinds[f]
      if (kind === 'json') return JSON.stringify(value)
      if (kind === 'boolean') return value === true ? 1 : 0
      return value as SQLInputValue
    })
  }

  /** The record a row (of `SELECT *`) holds. */
  record (row: unknown): T {
    const r = row as Record<string, SQLInputValue>
    const out: Record<string, unknown> = {}
    for (const f of this.#fields) {
      const value = r[columnOf(f)]
      const kind = this.#kinds[f]
      if (value === null || value === undefined) out[f] = null
      else if (kind === 'json') out[f] = JSON.parse(value as string)
      else if (kind === 'boolean') out[f] = value === 1
      else out[f] = value
    }
    return out as T
  }

  /** The record a row holds, or undefined for no row. */
  maybe (row: unknown): T | undefined {
    return row === undefined ? undefined : this.record(row)
  }

  all (rows: unknown[]): T[] {
    return rows.map(r => this.record(r))
  }
}

/** `createdAt` → `created_at`. */
function columnOf (field: string): string {
  return field.replace(/[A-Z]/g, c => `_${c.toLowerCase()}`)
}
