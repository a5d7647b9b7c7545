import type { Database } from './database.ts'
import { Rows } from './rows.ts'

/** A file in the data repository: a path in its owner's namespace naming a blob. */
export interface DataFileRecord {
  owner: string
  path: string
  blob: string
  size: number
  sha256: string
  updatedAt: number
}

/** An upload under way: its bytes so far are in a part file named by `id`. */
export interface DataUploadRecord {
  id: string
  owner: string
  path: string
  size: number
  sha256: string
  createdAt: number
}

export type DataRights = 'read' | 'write'

export interface DataGrantRecord {
  owner: string
  grantee: string
  /** `write` includes reading. */
  rights: DataRights
  createdAt: number
}

const files = new Rows<DataFileRecord>('data_files', { owner: 'plain', path: 'plain', blob: 'plain', size: 'plain', sha256: 'plain', updatedAt: 'plain' })
const uploads = new Rows<DataUploadRecord>('data_uploads', { id: 'plain', owner: 'plain', path: 'plain', size: 'plain', sha256: 'plain', createdAt: 'plain' })
const grants = new Rows<DataGrantRecord>('data_grants', { owner: 'plain', grantee: 'plain', rights: 'plain', createdAt: 'plain' })

/** The repository's files, uploads under way and grants, by owner. */
export class DataTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /** Adds a file, or points an existing path at new content. */
  putFile (f: DataFileRecord): void {
    this.#db.prepare(files.insert('INSERT OR REPLACE')).run(...files.values(f))
  }

  file (owner: string, path: string): DataFileRecord | undefined {
    return files.maybe(this.#db.prepare('SELECT * FROM data_files WHERE owner = ? AND path = ?').get(owner, path))
  }

  /** The owner's files at `prefix` or under it (a whole namespace for ''), by path. */
  files (owner: string, prefix: string, limit: number): DataFileRecord[] {
    const rows = prefix === ''
      ? this.#db.prepare('SELECT * FROM data_files WHERE owner = ? ORDER BY path LIMIT ?').all(owner, limit)
      // A range of bytes, not a count of characters: '0' follows '/', and SQLite compares UTF-8 bytes.
      : this.#db.prepare('SELECT * FROM data_files WHERE owner = ? AND (path = ? OR (path >= ? AND path < ?)) ORDER BY path LIMIT ?').all(owner, prefix, `${prefix}/`, `${prefix}0`, limit)
    return files.all(rows)
  }

  everyFile (): Array<{ owner: string, path: string }> {
    return this.#db.prepare('SELECT owner, path FROM data_files ORDER BY owner, path').all() as Array<{ owner: string, path: string }>
  }

  removeFile (owner: string, path: string): boolean {
    return Number(this.#db.prepare('DELETE FROM data_files WHERE owner = ? AND path = ?').run(owner, path).changes) > 0
  }

  /** Bytes the owner's files and uploads under way take (each file counted, shared content or not). */
  bytesOf (owner: string): number {
    const files = this.#db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM data_files WHERE owner = ?').get(owner) as { n: number }
    const uploads = this.#db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM data_uploads WHERE owner = ?').get(owner) as { n: number }
    return files.n + uploads.n
  }

  /** Bytes every owner's files and uploads under way take. */
  totalBytes (): number {
    const files = this.#db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM data_files').get() as { n: number }
    const uploads = this.#db.prepare('SELECT COALESCE(SUM(size), 0) AS n FROM data_uploads').get() as { n: number }
    return files.n + uploads.n
  }

  /** Every blob a file names: kept by the blob store's garbage collection. */
  blobs (): Set<string> {
    return new Set((this.#db.prepare('SELECT DISTINCT blob FROM data_files').all() as Array<{ blob: string }>).map(r => r.blob))
  }

  putUpload (u: DataUploadRecord): void {
    this.#db.prepare(uploads.insert()).run(...uploads.values(u))
  }

  upload (id: string): DataUploadRecord | undefined {
    return uploads.maybe(this.#db.prepare('SELECT * FROM data_uploads WHERE id = ?').get(id))
  }

  /** The upload under way of exactly this content to this path, to resume. */
  uploadOf (owner: string, path: string, size: number, sha256: string): DataUploadRecord | undefined {
    return uploads.maybe(this.#db.prepare('SELECT * FROM data_uploads WHERE owner = ? AND path = ? AND size = ? AND sha256 = ?').get(owner, path, size, sha256))
  }

  uploads (): DataUploadRecord[] {
    return uploads.all(this.#db.prepare('SELECT * FROM data_uploads ORDER BY created_at').all())
  }

  removeUpload (id: string): void {
    this.#db.prepare('DELETE FROM data_uploads WHERE id = ?').run(id)
  }

  putGrant (g: DataGrantRecord): void {
    this.#db.prepare(grants.insert('INSERT OR REPLACE')).run(...grants.values(g))
  }

  grant (owner: string, grantee: string): DataGrantRecord | undefined {
    return grants.maybe(this.#db.prepare('SELECT * FROM data_grants WHERE owner = ? AND grantee = ?').get(owner, grantee))
  }

  grants (owner: string): DataGrantRecord[] {
    return grants.all(this.#db.prepare('SELECT * FROM data_grants WHERE owner = ? ORDER BY grantee').all(owner))
  }

  removeGrant (owner: string, grantee: string): boolean {
    return Number(this.#db.prepare('DELETE FROM data_grants WHERE owner = ? AND grantee = ?').run(owner, grantee).changes) > 0
  }
}
