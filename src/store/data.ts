import type { Database } from './database.ts'

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

interface FileRow { owner: string, path: string, blob: string, size: number, sha256: string, updated_at: number }
interface UploadRow { id: string, owner: string, path: string, size: number, sha256: string, created_at: number }
interface GrantRow { owner: string, grantee: string, rights: string, created_at: number }

const fileOf = (r: FileRow): DataFileRecord => ({ owner: r.owner, path: r.path, blob: r.blob, size: r.size, sha256: r.sha256, updatedAt: r.updated_at })
const uploadOf = (r: UploadRow): DataUploadRecord => ({ id: r.id, owner: r.owner, path: r.path, size: r.size, sha256: r.sha256, createdAt: r.created_at })
const grantOf = (r: GrantRow): DataGrantRecord => ({ owner: r.owner, grantee: r.grantee, rights: r.rights === 'write' ? 'write' : 'read', createdAt: r.created_at })

/** The repository's files, uploads under way and grants, by owner. */
export class DataTable {
  readonly #db: Database

  constructor (db: Database) {
    this.#db = db
  }

  /** Adds a file, or points an existing path at new content. */
  putFile (f: DataFileRecord): void {
    this.#db.prepare('INSERT OR REPLACE INTO data_files (owner, path, blob, size, sha256, updated_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(f.owner, f.path, f.blob, f.size, f.sha256, f.updatedAt)
  }

  file (owner: string, path: string): DataFileRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM data_files WHERE owner = ? AND path = ?').get(owner, path) as FileRow | undefined
    return row === undefined ? undefined : fileOf(row)
  }

  /** The owner's files at `prefix` or under it (a whole namespace for ''), by path. */
  files (owner: string, prefix: string, limit: number): DataFileRecord[] {
    const rows = prefix === ''
      ? this.#db.prepare('SELECT * FROM data_files WHERE owner = ? ORDER BY path LIMIT ?').all(owner, limit)
      // A range of bytes, not a count of characters: '0' follows '/', and SQLite compares UTF-8 bytes.
      : this.#db.prepare('SELECT * FROM data_files WHERE owner = ? AND (path = ? OR (path >= ? AND path < ?)) ORDER BY path LIMIT ?').all(owner, prefix, `${prefix}/`, `${prefix}0`, limit)
    return (rows as unknown as FileRow[]).map(fileOf)
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
    this.#db.prepare('INSERT INTO data_uploads (id, owner, path, size, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(u.id, u.owner, u.path, u.size, u.sha256, u.createdAt)
  }

  upload (id: string): DataUploadRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM data_uploads WHERE id = ?').get(id) as UploadRow | undefined
    return row === undefined ? undefined : uploadOf(row)
  }

  /** The upload under way of exactly this content to this path, to resume. */
  uploadOf (owner: string, path: string, size: number, sha256: string): DataUploadRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM data_uploads WHERE owner = ? AND path = ? AND size = ? AND sha256 = ?').get(owner, path, size, sha256) as UploadRow | undefined
    return row === undefined ? undefined : uploadOf(row)
  }

  uploads (): DataUploadRecord[] {
    return (this.#db.prepare('SELECT * FROM data_uploads ORDER BY created_at').all() as unknown as UploadRow[]).map(uploadOf)
  }

  removeUpload (id: string): void {
    this.#db.prepare('DELETE FROM data_uploads WHERE id = ?').run(id)
  }

  putGrant (g: DataGrantRecord): void {
    this.#db.prepare('INSERT OR REPLACE INTO data_grants (owner, grantee, rights, created_at) VALUES (?, ?, ?, ?)').run(g.owner, g.grantee, g.rights, g.createdAt)
  }

  grant (owner: string, grantee: string): DataGrantRecord | undefined {
    const row = this.#db.prepare('SELECT * FROM data_grants WHERE owner = ? AND grantee = ?').get(owner, grantee) as GrantRow | undefined
    return row === undefined ? undefined : grantOf(row)
  }

  grants (owner: string): DataGrantRecord[] {
    return (this.#db.prepare('SELECT * FROM data_grants WHERE owner = ? ORDER BY grantee').all(owner) as unknown as GrantRow[]).map(grantOf)
  }

  removeGrant (owner: string, grantee: string): boolean {
    return Number(this.#db.prepare('DELETE FROM data_grants WHERE owner = ? AND grantee = ?').run(owner, grantee).changes) > 0
  }
}
